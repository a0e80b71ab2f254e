"""Build the peewee database for a config's engine, with the write guard and a reconnect policy.

``make_database(settings)`` gives a :class:`ValarMySQLDatabase` (PyMySQL) or a
:class:`ValarSqliteDatabase`. Both put :class:`~valarfast.guard.GuardedDatabaseMixin` first, so
every statement passes the write guard before anything is sent.

The reconnect policy of the MySQL database (:class:`ReconnectPolicyMixin`), when a statement
fails because the connection is gone (the errors in ``valarfast.errors.CONNECTION_LOST_ERRORS``):

==========================  =====================================================================
where                        what happens
==========================  =====================================================================
outside a transaction, read  reconnect once (restarting a dead SSH tunnel) and run it again
outside a transaction, write never replayed: :class:`WriteMayHaveBeenAppliedError`
inside a transaction         :class:`ConnectionLostError`; nothing retried (the server has
                             already rolled the transaction back)
``COMMIT`` loses its reply   :class:`WriteMayHaveBeenAppliedError`
==========================  =====================================================================

Before sending a statement outside a transaction, the socket is polled (no round trip): if the
server has already closed it (``KILL``, idle time-out, dead tunnel), a fresh connection is made
first, so a write after an idle disconnect runs normally, exactly once.

>>> from valarfast.config import load_settings
>>> db = make_database(load_settings({"database": ":memory:", "engine": "sqlite"}))
>>> db.execute_sql("SELECT 'abc' REGEXP 'b'").fetchone()
(1,)
"""

from __future__ import annotations

import logging
import re
import select
from collections.abc import Callable
from typing import Any

import peewee

from valarfast.config import Settings
from valarfast.errors import ConnectionLostError, WriteMayHaveBeenAppliedError, is_connection_lost
from valarfast.guard import GuardedDatabaseMixin, is_read_sql
from valarfast.sqlite_schema import SQLITE_DDL_TYPES, ensure_schema

logger = logging.getLogger("valarfast")

# returns (host, port) to connect to; called before every (re)connect (e.g. restarts a tunnel)
Endpoint = Callable[[], tuple[str, int]]


def _socket_is_dead(conn: Any) -> bool:
    """Whether a PyMySQL connection's socket is closed or has unsolicited bytes (a kill notice).

    Between statements the MySQL server never speaks first: a readable socket means EOF or an
    error packet sent before the server closed it. ``select`` with a zero time-out: no round trip.
    """
    sock = getattr(conn, "_sock", None)
    if sock is None:
        return True
    result = getattr(conn, "_result", None)
    if result is not None and getattr(result, "unbuffered_active", False):
        return False  # rows of an unbuffered (streaming) query are pending: alive, not idle
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class ReconnectPolicyMixin:
    """The reconnect policy above, for a peewee database whose driver is PyMySQL."""

    endpoint: Endpoint | None = None
    _lost_in_transaction: bool = False

    # --- connecting ------------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self.endpoint is not None:
            host, port = self.endpoint()
            self.connect_params.update(host=host, port=port)  # type: ignore[attr-defined]
        self._lost_in_transaction = False
        return super()._connect()  # type: ignore[misc]

    def _drop_connection(self) -> None:
        """Forget the broken connection (without a round trip); the next statement reconnects."""
        state = self._state  # type: ignore[attr-defined]
        conn = state.conn
        if conn is not None:
            try:
                conn._force_close()
            except Exception:
                logger.debug("closing a broken connection failed", exc_info=True)
        if not self.in_transaction():  # type: ignore[attr-defined]
            state.reset()

    # --- statements ------------------------------------------------------------------------------

    def execute_sql(self, sql: Any, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        run = super().execute_sql  # type: ignore[misc]
        if self.in_transaction():  # type: ignore[attr-defined]
            return self._in_transaction(run, sql, params, *args, **kwargs)
        state = self._state  # type: ignore[attr-defined]
        if not state.closed and _socket_is_dead(state.conn):
            logger.info("the connection was closed by the other side; reconnecting")
            self._drop_connection()
        try:
            return run(sql, params, *args, **kwargs)
        except Exception as e:
            if not is_connection_lost(e):
                raise
            self._drop_connection()
            if not is_read_sql(sql):
                raise WriteMayHaveBeenAppliedError(
                    "the connection was lost while a write was running: it may or may not have "
                    "been applied, and it was not run again; check the data before retrying"
                ) from e
            logger.info("connection lost during a read; reconnecting once and running it again")
        try:
            return run(sql, params, *args, **kwargs)
        except Exception as e:
            if not is_connection_lost(e):
                raise
            self._drop_connection()
            raise ConnectionLostError(
                "the connection was lost, and lost again after one reconnect"
            ) from e

    def _in_transaction(self, run: Any, sql: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        if self._lost_in_transaction:
            raise ConnectionLostError(
                "the connection was lost inside this transaction; it was rolled back by the "
                "server; leave the transaction block and start again"
            )
        state = self._state  # type: ignore[attr-defined]
        if _socket_is_dead(state.conn):
            self._lost_in_transaction = True
            self._drop_connection()
            raise ConnectionLostError(
                "the connection was lost inside a transaction (nothing was sent; the server "
                "rolled the transaction back); nothing was retried"
            )
        try:
            return run(sql, params, *args, **kwargs)
        except Exception as e:
            if not is_connection_lost(e):
                raise
            self._lost_in_transaction = True
            self._drop_connection()
            raise ConnectionLostError(
                "the connection was lost inside a transaction: the server rolled it back; "
                "nothing was retried"
            ) from e

    # --- transaction control ---------------------------------------------------------------------

    def commit(self) -> None:
        if self._lost_in_transaction:
            raise ConnectionLostError(
                "cannot commit: the connection was lost inside the transaction, which the "
                "server rolled back"
            )
        try:
            super().commit()  # type: ignore[misc]
        except Exception as e:
            if not is_connection_lost(e):
                raise
            self._lost_in_transaction = True
            self._drop_connection()
            raise WriteMayHaveBeenAppliedError(
                "the connection was lost during COMMIT: the transaction may or may not have been "
                "committed; check the data before retrying"
            ) from e

    def rollback(self) -> None:
        if self._lost_in_transaction:
            # the server discards a transaction whose connection is gone: nothing to send
            if not self.in_transaction():  # type: ignore[attr-defined]
                self._state.reset()  # type: ignore[attr-defined]
                self._lost_in_transaction = False
            return
        try:
            super().rollback()  # type: ignore[misc]
        except Exception as e:
            if not is_connection_lost(e):
                raise
            self._drop_connection()  # a lost ROLLBACK is a rollback all the same

    def begin(self, *args: Any, **kwargs: Any) -> None:
        state = self._state  # type: ignore[attr-defined]
        if not state.closed and _socket_is_dead(state.conn):
            self._drop_connection()  # reconnect before BEGIN: nothing was in flight
        super().begin(*args, **kwargs)  # type: ignore[misc]


#: peewee 3 replaces the session's sql_mode by ``PIPES_AS_CONCAT`` alone (it writes ``||`` for
#: string concatenation); peewee 4 leaves the server's mode alone
_PEEWEE_SETS_SQL_MODE = peewee.MySQLDatabase.sql_mode is not None


class ValarMySQLDatabase(GuardedDatabaseMixin, ReconnectPolicyMixin, peewee.MySQLDatabase):
    """Valar on MySQL/MariaDB through PyMySQL: write guard + reconnect policy.

    The server's ``sql_mode`` is kept (MariaDB's default is strict: a bad ENUM value, an
    out-of-range integer or a too-long string is refused, not silently truncated). On peewee 3,
    ``PIPES_AS_CONCAT`` is added to it instead of replacing it.
    """

    sql_mode = None  # a config's own "sql_mode" still wins (it travels in connect_params)

    def _connect(self) -> Any:
        conn = super()._connect()
        if _PEEWEE_SETS_SQL_MODE:
            with conn.cursor() as cur:
                cur.execute(
                    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''),"
                    " 'PIPES_AS_CONCAT')"
                )
        return conn


def _regexp(pattern: str | None, value: Any) -> bool | None:
    if pattern is None or value is None:
        return None
    # case-insensitive, as MariaDB's REGEXP on Valar's case-insensitive collation
    return re.search(pattern, str(value), re.IGNORECASE) is not None


class ValarSqliteDatabase(GuardedDatabaseMixin, peewee.SqliteDatabase):
    """Valar on a local SQLite file: foreign keys on, ``REGEXP`` available."""

    def __init__(self, database: str, **kwargs: Any) -> None:
        pragmas = dict(kwargs.pop("pragmas", None) or {})
        pragmas.setdefault("foreign_keys", 1)
        kwargs.setdefault("field_types", dict(SQLITE_DDL_TYPES))
        super().__init__(database, pragmas=pragmas, **kwargs)
        self.register_function(_regexp, "regexp", 2)

    def _initialize_connection(self, conn: Any) -> None:
        super()._initialize_connection(conn)  # type: ignore[misc]
        # a new/empty file gets Valar's tables; a file that is not one is refused (sqlite_schema)
        ensure_schema(conn)


def make_database(settings: Settings, endpoint: Endpoint | None = None) -> peewee.Database:
    """The (not yet connected) peewee database for ``settings``.

    ``endpoint`` (MySQL only) is called before every connect and returns the host and port to
    use, e.g. a tunnel's local port after restarting it.
    """
    params = dict(settings.driver)
    if settings.engine == "sqlite":
        return ValarSqliteDatabase(settings.database, **params)
    db = ValarMySQLDatabase(settings.database, **params)
    db.endpoint = endpoint
    return db


__all__ = [
    "ReconnectPolicyMixin",
    "ValarMySQLDatabase",
    "ValarSqliteDatabase",
    "make_database",
]
