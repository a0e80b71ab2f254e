"""The connection to Valar: :class:`Valar`, :func:`opened`, :func:`new_model`, :func:`valarpy_info`.

The config is read and checked when ``Valar(config)`` is made; the network is touched only by
:meth:`Valar.open`, which starts the SSH tunnel if the config asks for one, connects, binds
``valarfast.metamodel.database_proxy`` and sets ``valarfast.model.conn``.

>>> import valarfast
>>> with valarfast.opened({"database": "valar"}) as model:   # doctest: +SKIP
...     print(model.Refs.select().count())
...     with model.atomic() as t:          # a transaction; nested: a savepoint
...         ...
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import peewee

from valarfast import guard
from valarfast.config import Settings, find_extant_path, get_preferred_paths, load_settings
from valarfast.engines import make_database
from valarfast.errors import (
    ConnectFailedError,
    NotConnectedError,
    TunnelError,
    ValarError,
    is_connection_lost,
)
from valarfast.tunnel import Tunnel, make_tunnel

logger = logging.getLogger("valarfast")

F = TypeVar("F", bound=Callable[..., Any])


class GlobalConnection:
    """valarpy's ``backend``: the process-wide write switch (see :mod:`valarfast.guard`).

    Not thread-scoped: enabling writes enables them for every thread of the process.
    """

    _peewee_database: peewee.Database | None = None

    @classmethod
    def enable_write(cls) -> None:
        """Allow writes (INSERT, UPDATE, DELETE, ...) for the whole process."""
        guard.enable_write()

    @classmethod
    def disable_write(cls) -> None:
        """Refuse writes again (the default)."""
        guard.disable_write()

    @classmethod
    def is_write_enabled(cls) -> bool:
        return guard.is_write_enabled()


class _Rollback(Exception):
    """Internal: makes an atomic block exit through its rollback path."""


class _Block:
    """``atomic()``/``rolling_back()``: a context manager and a decorator (fresh block per call)."""

    def __init__(self, db: peewee.Database, always_rollback: bool) -> None:
        self._db = db
        self._always_rollback = always_rollback
        self._stack: list[Any] = []

    def __enter__(self) -> Any:
        ctx = self._db.atomic()
        helper = ctx.__enter__()  # a transaction, or a savepoint when nested: commit()/rollback()
        self._stack.append(ctx)
        return helper

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        ctx = self._stack.pop()
        if exc_type is None and self._always_rollback:
            ctx.__exit__(_Rollback, _Rollback(), None)  # peewee rolls back on any exception
            return
        ctx.__exit__(exc_type, exc, tb)

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _Block(self._db, self._always_rollback):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


class Valar:
    """A connection to Valar made from a config (see :mod:`valarfast.config`).

    >>> v = Valar({"database": "valar", "password": "secret"})   # nothing is sent yet
    >>> "secret" in repr(v)
    False
    """

    def __init__(self, config: Any = None) -> None:
        self.settings: Settings = load_settings(config)
        self._db: peewee.Database | None = None
        self._tunnel: Tunnel | None = None

    @classmethod
    def singleton(cls, config: Any = None) -> Valar:
        """valarpy 3's alternative constructor: the same as ``Valar(config)`` (not opened).

        >>> Valar.singleton({"database": "valar"}).is_open
        False
        """
        return cls(config)

    # --- valarpy's path helpers ----------------------------------------------------------------

    @classmethod
    def get_preferred_paths(cls) -> list[Path | None]:
        """Where a config is looked for, best first (``$VALARPY_CONFIG``, then ``~/...``)."""
        return get_preferred_paths()

    @classmethod
    def find_extant_path(cls, *paths: str | Path | None) -> Path:
        """The first path that exists; FileNotFoundError naming every path tried."""
        return find_extant_path(*paths)

    # --- life cycle ------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._db is not None

    @property
    def database(self) -> peewee.Database:
        """The underlying peewee database (NotConnectedError when not open)."""
        if self._db is None:
            raise NotConnectedError(
                "no open connection: open one with valarfast.opened() or Valar(config).open()"
            )
        return self._db

    @property
    def backend(self) -> type[GlobalConnection]:
        """valarpy's write switch: ``backend.enable_write()`` / ``backend.disable_write()``."""
        return GlobalConnection

    @property
    def tunnel(self) -> Tunnel | None:
        return self._tunnel

    def open(self) -> Valar:
        """Start the tunnel (if any), connect, and bind the model to this connection."""
        if self._db is not None:
            return self
        s = self.settings
        tunnel = make_tunnel(s.ssh) if s.ssh is not None else None
        try:
            endpoint = None
            if tunnel is not None:
                tunnel.start()
                endpoint = tunnel.ensure_alive
            db = make_database(s, endpoint=endpoint)
            self._connect(db, tunnel)
        except BaseException:
            if tunnel is not None:
                tunnel.stop()
            raise
        self._db, self._tunnel = db, tunnel
        self._bind(db)
        logger.info("connected to %s", self._where())
        return self

    def _where(self) -> str:
        s = self.settings
        if s.engine == "sqlite":
            return f"sqlite:{s.database}"
        host = s.driver.get("host", "localhost")
        port = s.driver.get("port", 3306)
        via = f" via SSH {s.ssh.host}" if s.ssh else ""
        return f"{s.database} on {host}:{port}{via}"

    def _connect(self, db: peewee.Database, tunnel: Tunnel | None) -> None:
        try:
            db.connect()
        except peewee.PeeweeException as e:
            if tunnel is not None and is_connection_lost(e):
                ssh = self.settings.ssh
                assert ssh is not None
                raise TunnelError(
                    f"the SSH tunnel to {ssh.host} is up, but the database at "
                    f"{ssh.remote_host}:{ssh.remote_port} (as seen from {ssh.host}) closed the "
                    "connection: is it running there? check remote_bind_host/remote_bind_port"
                ) from e
            where, why = self._where(), _driver_message(e)
            raise ConnectFailedError(f"cannot connect to {where}: {why}") from e

    def _bind(self, db: peewee.Database) -> None:
        from valarfast import metamodel

        metamodel.database_proxy.initialize(db)
        GlobalConnection._peewee_database = db
        model = importlib.import_module("valarfast.model")
        setattr(model, "conn", self)  # noqa: B010 - a module global, set at run time

    def _unbind(self) -> None:
        from valarfast import metamodel

        model = importlib.import_module("valarfast.model")
        if getattr(model, "conn", None) is self:
            setattr(model, "conn", None)  # noqa: B010
        if GlobalConnection._peewee_database is self._db:
            GlobalConnection._peewee_database = None
        if getattr(metamodel.database_proxy, "obj", None) is self._db:
            metamodel.database_proxy.initialize(None)

    def close(self) -> None:
        """Close the connection and stop the tunnel (idempotent)."""
        db, tunnel = self._db, self._tunnel
        try:
            if db is not None:
                try:
                    self._unbind()
                finally:
                    _close_database(db)
        finally:
            self._db = None
            self._tunnel = None
            if tunnel is not None:
                tunnel.stop()

    def reconnect(self, hard: bool = False) -> None:
        """Make a fresh connection (``hard``: also restart the tunnel and rebind the model)."""
        if hard or self._db is None:
            self.close()
            self.open()
            return
        db = self._db
        if db.in_transaction():
            raise ValarError("cannot reconnect inside a transaction")
        try:
            db.close()
        except peewee.PeeweeException:
            _state(db).reset()
        db.connect()

    def __enter__(self) -> Valar:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # the tunnel is a thread or a child process: never leak it
        try:
            if getattr(self, "_tunnel", None) is not None or getattr(self, "_db", None) is not None:
                self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "open" if self._db is not None else "closed"
        return f"Valar({self.settings!r}, {state})"

    # --- transactions ----------------------------------------------------------------------------

    def atomic(self) -> Any:
        """A transaction (a savepoint when nested): commit on exit, rollback on an exception.

        Yields an object with ``commit()`` and ``rollback()``; also a decorator.
        """
        return _Block(self.database, always_rollback=False)

    def rolling_back(self) -> Any:
        """Like :meth:`atomic` but always rolled back at exit (for tests); also a decorator."""
        return _Block(self.database, always_rollback=True)


def _state(db: peewee.Database) -> Any:
    """peewee's per-thread connection state (``conn``, ``transactions``, ``reset()``)."""
    return db._state  # type: ignore[attr-defined]


def _close_database(db: peewee.Database) -> None:
    """Close even inside a transaction (the server rolls it back) or on a broken connection."""
    if db.in_transaction():
        logger.warning("closing inside a transaction: it is rolled back")
    conn = None if db.is_closed() else _state(db).conn
    _state(db).reset()  # also forgets any open transaction
    if conn is not None:
        try:
            conn.close()
        except Exception:
            force = getattr(conn, "_force_close", None)
            if force is not None:
                force()


def _driver_message(e: BaseException) -> str:
    """``(1045, "Access denied ...")`` -> ``Access denied ... (error 1045)``; else the text."""
    args = e.args[0].args if e.args and isinstance(e.args[0], BaseException) else e.args
    if len(args) == 2 and isinstance(args[0], int):
        return f"{args[1]} (error {args[0]})"
    return str(e) or type(e).__name__


@contextmanager
def opened(config: Any = None) -> Iterator[ModuleType]:
    """Open a :class:`Valar`, yield ``valarfast.model`` (``model.conn`` set), close everything.

    ``config=None`` uses ``$VALARPY_CONFIG``.
    """
    valar = Valar(config).open()
    try:
        yield new_model()
    finally:
        valar.close()


def new_model() -> ModuleType:
    """The ``valarfast.model`` module (a connection should be open for queries)."""
    return importlib.import_module("valarfast.model")


def _model_tables(model: ModuleType) -> list[type[peewee.Model]]:
    from valarfast import metamodel

    base = metamodel.BaseModel
    seen: dict[str, type[peewee.Model]] = {}
    for value in vars(model).values():
        if isinstance(value, type) and issubclass(value, base) and value is not base:
            seen.setdefault(value._meta.table_name, value)
    return [seen[k] for k in sorted(seen)]


def valarpy_info(config: Any = None) -> Iterator[str]:
    """Lines of a connection check: version, "Connecting...", "Connected.", row counts, success.

    Uses the first config of :meth:`Valar.get_preferred_paths` unless ``config`` is given.
    """
    from valarfast import __version__

    yield f"valarfast version {__version__}"
    if config is None:
        config = find_extant_path(*Valar.get_preferred_paths())
    valar = Valar(config)
    yield "Connecting..."
    with valar:
        yield "Connected."
        model = new_model()
        tables = _model_tables(model)
        width = max((len(t.__name__) for t in tables), default=5)
        yield f"{'table':<{width}}  rows"
        for table in tables:
            yield f"{table.__name__:<{width}}  {table.select().count()}"
    yield "All valarpy queries succeeded."


__all__ = ["GlobalConnection", "Valar", "new_model", "opened", "valarpy_info"]
