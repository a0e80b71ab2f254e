"""The exception hierarchy of valarfast.

Every error valarfast raises on purpose derives from :class:`ValarError`. The four names of
valarpy 3 keep their bases (``ValarLookupError`` is a ``KeyError``, ...), so ``except KeyError``
in old code still catches a failed ``fetch``.

>>> issubclass(ValarLookupError, KeyError)
True
"""

from __future__ import annotations


class ValarError(Exception):
    """Base of every error valarfast raises on purpose."""


class ValarLookupError(ValarError, KeyError):
    """A row asked for by id, name or instance does not exist."""

    def __str__(self) -> str:  # KeyError quotes its argument; a message reads better plain
        return str(self.args[0]) if self.args else ""


class ValarTableTypeError(ValarError, TypeError):
    """An instance of one model was given where another model was expected."""


class UnsupportedOperationError(ValarError):
    """An operation valarfast never performs on Valar (``drop_table``, ``truncate_table``, ``raw``)."""


class WriteNotEnabledError(ValarError):
    """A write was attempted while writing is disabled; nothing was sent to the server."""


class NotConnectedError(ValarError, RuntimeError):
    """A query was run before a connection was opened."""


class ConnectionLostError(ValarError, ConnectionError):
    """The connection to the server was lost and the statement could not be completed."""


class WriteMayHaveBeenAppliedError(ConnectionLostError):
    """The connection was lost during a write: it may or may not have been applied. Never replayed."""


class TunnelError(ValarError, ConnectionError):
    """The SSH tunnel could not be started, authenticated or kept alive."""


class BlobDecodeError(ValarError, ValueError):
    """A blob stored in Valar cannot be decoded (for example a length that is not a multiple of 4)."""
