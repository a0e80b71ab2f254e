"""Rows of one SELECT, streamed from the open connection without buffering the result.

On PyMySQL the rows come from an unbuffered cursor (``SSCursor``): each row is handed over as
it arrives from the socket, so a result of gigabytes never sits in memory twice. On SQLite the
plain cursor is already lazy. The statement goes straight to the driver (not through peewee's
``execute_sql``), so this module applies the connection rules itself: the write guard is
checked (only reads are streamed), and a connection lost before the first row, outside a
transaction, is re-opened once and the statement sent again; later, or inside a transaction,
the loss is raised as :class:`~valarfast.errors.ConnectionLostError` and nothing is retried.

>>> sql = "SELECT id, floats FROM well_features WHERE id IN (%s)"
>>> for row_id, blob in stream_rows(db, sql, [7]):  # doctest: +SKIP
...     print(row_id, len(blob))
"""

from __future__ import annotations

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


def _unbuffered_cursor(conn: Any) -> Any:
    try:
        import pymysql.connections
        import pymysql.cursors
    except ImportError:  # pragma: no cover - PyMySQL is a dependency
        return conn.cursor()
    if isinstance(conn, pymysql.connections.Connection):
        return conn.cursor(pymysql.cursors.SSCursor)
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


def stream_rows(db: Any, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
    """Yield the rows of one read statement as they arrive (see the module docstring).

    Close the generator (or exhaust it) before running another statement on the connection;
    closing it early drains the rest of the result, as the protocol requires.
    """
    from .guard import check_sql

    check_sql(sql)
    retry = not db.in_transaction()
    while True:
        cursor = None
        try:
            cursor = _unbuffered_cursor(db.connection())
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
