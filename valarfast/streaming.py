"""Rows of one SELECT, streamed from the open connection without buffering the result.

On PyMySQL the rows come from an unbuffered cursor (``SSCursor``): each row is handed over as
it arrives from the socket, so a result of gigabytes never sits in memory twice. On SQLite the
plain cursor is already lazy. The statement goes straight to the driver (not through peewee's
``execute_sql``), so this module applies the connection rules itself: the write guard is
checked (only reads are streamed), and a connection lost before the first row, outside a
transaction, is re-opened once and the statement sent again; later, or inside a transaction,
the loss is raised as :class:`~valarfast.errors.ConnectionLostError` and nothing is retried.

``zero_copy=True`` (the batch functions): on PyMySQL a binary value of at least
``ZERO_COPY_BYTES`` comes as a read-only ``memoryview`` into the packet the driver received,
valid until the next row is read, instead of a ``bytes`` copy of it. PyMySQL slices each value
out of its packet, a copy of every blob (without it a run pair's fetch took 62.7 ms instead of
74.6 ms); the kernels read a memoryview as they read bytes. Other values are PyMySQL's own.

>>> sql = "SELECT id, floats FROM well_features WHERE id IN (%s)"
>>> for row_id, blob in stream_rows(db, sql, [7]):  # doctest: +SKIP
...     print(row_id, len(blob))
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from .errors import ConnectionLostError, NotConnectedError, is_connection_lost

logger = logging.getLogger("valarfast")

#: at most this many ids in one ``IN (...)`` list (SQLite's parameter limit is 32766)
MAX_IDS_PER_QUERY = 20_000

NOT_CONNECTED = "no open connection: open one with valarfast.opened() or Valar(config).open()"


def current_database() -> Any:
    """The peewee database bound to ``metamodel.database_proxy``, or NotConnectedError."""
    from . import metamodel

    db = getattr(metamodel.database_proxy, "obj", None)
    if db is None:
        raise NotConnectedError(NOT_CONNECTED)
    return db


def param_marker(db: Any) -> str:
    """The driver's parameter placeholder (``%s`` for PyMySQL, ``?`` for SQLite)."""
    return str(getattr(db, "param", "%s"))


def in_list(db: Any, n: int) -> str:
    """``(?, ?, ?)`` with ``n`` placeholders."""
    return "(" + ", ".join([param_marker(db)] * n) + ")"


def query_all(db: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """A small read through the database object (guard and reconnect policy apply)."""
    return list(db.execute_sql(sql, list(params)).fetchall())


#: zero_copy=True: binary values of at least this many bytes come as memoryviews
ZERO_COPY_BYTES = 4096

# first byte of a length-encoded integer in a text-protocol row (MySQL client/server protocol)
_NULL_VALUE, _TWO_BYTES, _THREE_BYTES, _EIGHT_BYTES = 251, 252, 253, 254
_LENGTH_BYTES = {_TWO_BYTES: 2, _THREE_BYTES: 3, _EIGHT_BYTES: 8}


def row_of_packet(
    data: bytes, converters: Sequence[tuple[str | None, Any]], min_view: int = ZERO_COPY_BYTES
) -> tuple[Any, ...]:
    """The values of one text-protocol row packet, as PyMySQL converts them, except that a
    binary value (no encoding, no converter) of ``min_view`` bytes or more is a memoryview.

    >>> columns = [("ascii", int), ("ascii", None), (None, None)]
    >>> row = row_of_packet(b"\\x0242\\xfb\\x03abc", columns, min_view=2)
    >>> row[:2], bytes(row[2])
    ((42, None), b'abc')
    """
    view = memoryview(data)
    end = len(data)
    pos = 0
    row: list[Any] = []
    for encoding, converter in converters:
        if pos >= end:  # fewer values than columns: as PyMySQL, stop there
            break
        first = data[pos]
        pos += 1
        if first == _NULL_VALUE:
            row.append(None)
            continue
        if first < _NULL_VALUE:
            n = first
        else:
            width = _LENGTH_BYTES.get(first)
            if width is None:
                raise ValueError(f"malformed row packet: length prefix 0x{first:02x}")
            n = int.from_bytes(data[pos : pos + width], "little")
            pos += width
        if pos + n > end:
            raise ValueError(f"malformed row packet: a {n}-byte value past its {end} bytes")
        value: Any
        if encoding is None and converter is None and n >= min_view:
            value = view[pos : pos + n]
        else:
            value = data[pos : pos + n]
            if encoding is not None:
                value = value.decode(encoding)
            if converter is not None:
                value = converter(value)
        pos += n
        row.append(value)
    return tuple(row)


@functools.cache
def _zero_copy_cursor_class() -> Any:
    """An unbuffered PyMySQL cursor whose rows are read by :func:`row_of_packet`, or plain
    ``SSCursor`` when this PyMySQL lacks the internals it relies on (then values are copies)."""
    import pymysql.connections
    import pymysql.cursors

    result_class = pymysql.connections.MySQLResult
    needed = ("_read_rowdata_packet_unbuffered", "_check_packet_is_eof", "_get_descriptions")
    if not all(hasattr(result_class, name) for name in needed):  # pragma: no cover
        return pymysql.cursors.SSCursor

    class ZeroCopyCursor(pymysql.cursors.SSCursor):
        """``SSCursor`` whose large binary values are memoryviews into the driver's packets."""

        def read_next(self) -> Any:
            result = self._result
            if result is None or not result.unbuffered_active:
                return None
            packet = result.connection._read_packet()
            if result._check_packet_is_eof(packet):
                result.unbuffered_active = False
                result.connection = None
                result.rows = None
                return None
            row = row_of_packet(packet.get_all_data(), result.converters, ZERO_COPY_BYTES)
            result.affected_rows = 1
            result.rows = (row,)
            return self._conv_row(row)

    return ZeroCopyCursor


def _unbuffered_cursor(conn: Any, zero_copy: bool = False) -> Any:
    try:
        import pymysql.connections
        import pymysql.cursors
    except ImportError:  # pragma: no cover - PyMySQL is a dependency
        return conn.cursor()
    if isinstance(conn, pymysql.connections.Connection):
        return conn.cursor(_zero_copy_cursor_class() if zero_copy else pymysql.cursors.SSCursor)
    return conn.cursor()


def _drop(db: Any) -> None:
    """Forget a broken connection so that the next use opens a new one."""
    drop = getattr(db, "_drop_connection", None)
    if drop is not None:
        drop()
        return
    try:
        db.close()
    except Exception:  # the connection is broken; closing it may fail too
        logger.debug("closing a broken connection failed", exc_info=True)


def stream_rows(
    db: Any, sql: str, params: Sequence[Any] = (), *, zero_copy: bool = False
) -> Iterator[tuple[Any, ...]]:
    """Yield the rows of one read statement as they arrive (see the module docstring).

    Close the generator (or exhaust it) before running another statement on the connection;
    closing it early drains the rest of the result, as the protocol requires.
    ``zero_copy=True``: large binary values are memoryviews, valid until the next row.
    """
    from .guard import check_sql

    check_sql(sql)
    retry = not db.in_transaction()
    while True:
        cursor = None
        try:
            cursor = _unbuffered_cursor(db.connection(), zero_copy)
            cursor.execute(sql, list(params))
            first = cursor.fetchone()
        except Exception as e:
            if cursor is not None:
                _close_quietly(cursor)
            if not is_connection_lost(e):
                raise
            if not retry:
                in_tx = db.in_transaction()
                _drop(db)
                raise ConnectionLostError(
                    "the connection was lost while streaming rows"
                    + (" inside a transaction; nothing was retried" if in_tx else ", twice")
                ) from e
            logger.info("connection lost before the first row; reconnecting once")
            _drop(db)
            retry = False
            continue
        break
    try:
        row = first
        while row is not None:
            yield row
            row = cursor.fetchone()
    except Exception as e:
        if is_connection_lost(e):
            _drop(db)
            raise ConnectionLostError(
                "the connection was lost in the middle of a streamed result; nothing was retried"
            ) from e
        raise
    finally:
        _close_quietly(cursor)


def _close_quietly(cursor: Any) -> None:
    try:
        cursor.close()
    except Exception:  # a broken connection cannot drain the rest
        logger.debug("closing a streaming cursor failed", exc_info=True)
        # nothing more can be read: mark PyMySQL's unbuffered result done, so that its
        # finalizers (cursor and result __del__) do not try to drain a closed socket again
        result = getattr(cursor, "_result", None)
        if result is not None and getattr(result, "unbuffered_active", False):
            result.unbuffered_active = False
        with contextlib.suppress(AttributeError, TypeError):
            cursor.connection = None
