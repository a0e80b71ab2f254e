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
    """An operation valarfast never does on Valar (``drop_table``, ``truncate_table``, ``raw``)."""


class WriteNotEnabledError(ValarError):
    """A write was attempted while writing is disabled; nothing was sent to the server."""


class NotConnectedError(ValarError, RuntimeError):
    """A query was run before a connection was opened."""


class ConnectionLostError(ValarError, ConnectionError):
    """The connection to the server was lost and the statement could not be completed."""


class WriteMayHaveBeenAppliedError(ConnectionLostError):
    """The connection was lost during a write: it may or may not have been applied.

    valarfast never replays such a write; check the data before trying again.
    """


class ConnectFailedError(ValarError, ConnectionError):
    """The server could not be reached or refused the login (the driver's error is the cause)."""


class TunnelError(ValarError, ConnectionError):
    """The SSH tunnel could not be started, authenticated or kept alive."""


class BlobDecodeError(ValarError, ValueError):
    """A blob stored in Valar cannot be decoded (e.g. a length not a multiple of its item size)."""


class ConfigNotFoundError(FileNotFoundError, LookupError):
    """No config file exists at any of the paths tried (also a ``LookupError``, as in valarpy)."""


# The ONE table of driver errors that mean "the connection is gone". Keys are the fully qualified
# names of exception classes (matched along the MRO, so no driver import is needed); a value of
# None means every instance, else the set of error codes (``args[0]``) that mean a lost connection.
CONNECTION_LOST_ERRORS: dict[str, frozenset[int] | None] = {
    "pymysql.err.OperationalError": frozenset(
        {
            2006,  # CR_SERVER_GONE_ERROR: MySQL server has gone away
            2013,  # CR_SERVER_LOST: lost connection during query (also read timeouts)
            2055,  # CR_SERVER_LOST_EXTENDED: lost connection, system error
            1927,  # ER_CONNECTION_KILLED (MariaDB): KILL CONNECTION from another session
            4031,  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8): disconnected for inactivity
            1053,  # ER_SERVER_SHUTDOWN: server shutdown in progress
        }
    ),
    "pymysql.err.InterfaceError": None,  # PyMySQL raises it once its socket is closed
    "builtins.BrokenPipeError": None,
    "builtins.ConnectionResetError": None,
    "builtins.ConnectionAbortedError": None,
}


def _lost_by_table(exc: BaseException) -> bool:
    for klass in type(exc).__mro__:
        key = f"{klass.__module__}.{klass.__qualname__}"
        if key in CONNECTION_LOST_ERRORS:
            codes = CONNECTION_LOST_ERRORS[key]
            if codes is None:
                return True
            code = exc.args[0] if exc.args else None
            return isinstance(code, int) and code in codes
    return False


def is_connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or the driver error it wraps) means that the connection is gone.

    Follows ``__cause__``/``__context__`` and peewee's wrapping (the driver error is its ``orig``).

    >>> import pymysql
    >>> is_connection_lost(pymysql.err.OperationalError(2013, "Lost connection"))
    True
    >>> is_connection_lost(pymysql.err.OperationalError(1064, "syntax error"))
    False
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionLostError) or _lost_by_table(e):
            return True
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        orig = getattr(e, "orig", None)  # peewee keeps the driver's error there
        if isinstance(orig, BaseException):
            todo.append(orig)
    return False
