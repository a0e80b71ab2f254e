"""Lost connections against MariaDB: KILL CONNECTION, and a proxy that swallows a reply."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from valarfast import guard
from valarfast.connection import opened
from valarfast.errors import (
    CONNECTION_LOST_ERRORS,
    ConnectionLostError,
    WriteMayHaveBeenAppliedError,
    is_connection_lost,
)


class DroppingProxy:
    """A TCP proxy to MariaDB that, once armed, forwards the next client packet containing
    ``pattern`` to the server, then closes both sides as soon as the server answers (the reply
    is never delivered): the statement ran, the client never hears so."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pattern: bytes | None = None
        self.dropped = threading.Event()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._accepter = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._accepter.start()

    def arm(self, pattern: bytes) -> None:
        self.dropped.clear()
        self.pattern = pattern

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=5)
            server.settimeout(None)
            self._socks += [client, server]
            pair = {"dropping": False}
            for src, dst, up in ((client, server, True), (server, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, up, pair), daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, up: bool, pair: dict[str, bool]
    ) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if up and self.pattern is not None and self.pattern in data:
                    self.pattern = None
                    pair["dropping"] = True
                elif not up and pair["dropping"]:
                    self.dropped.set()  # the server answered: swallow it and cut the line
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self.listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._accepter.join(timeout=5)
        for t in self._threads:
            t.join(timeout=5)


@pytest.fixture()
def model(fresh_valar_db: dict[str, Any]) -> Iterator[ModuleType]:
    with opened(fresh_valar_db) as m, guard.writes_enabled():
        yield m


def kill(model: ModuleType) -> int:
    """KILL the model's connection from another session; wait until it is gone."""
    import dbtools

    cid = model.conn.database.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]
    admin = dbtools.admin_connection()
    try:
        with admin.cursor() as cur:
            cur.execute(f"KILL CONNECTION {int(cid)}")
            for _ in range(100):
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.processlist WHERE id = %s", (cid,)
                )
                if cur.fetchone()[0] == 0:
                    break
                time.sleep(0.02)
    finally:
        admin.close()
    return int(cid)


def test_lost_table_is_one_table() -> None:
    import peewee
    import pymysql

    assert is_connection_lost(pymysql.err.OperationalError(2006, "gone"))
    assert is_connection_lost(peewee.OperationalError(pymysql.err.OperationalError(2013, "lost")))
    assert is_connection_lost(BrokenPipeError())
    assert not is_connection_lost(pymysql.err.OperationalError(1045, "access denied"))
    assert not is_connection_lost(pymysql.err.ProgrammingError(1064, "syntax"))
    assert "pymysql.err.OperationalError" in CONNECTION_LOST_ERRORS


def test_kill_between_statements_read_recovers(model: ModuleType) -> None:
    old = kill(model)
    assert model.Refs.select().count() == 1
    new = model.conn.database.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]
    assert new != old


def test_kill_between_statements_write_runs_once(model: ModuleType) -> None:
    kill(model)
    model.Refs.create(name="after_kill")  # the dead socket is noticed before sending
    assert model.Refs.select().where(model.Refs.name == "after_kill").count() == 1


def test_kill_inside_transaction_raises_and_never_retries(model: ModuleType) -> None:
    with pytest.raises(ConnectionLostError), model.atomic():
        model.Refs.create(name="in_txn")
        kill(model)
        model.Refs.create(name="in_txn_2")
    # the server rolled the transaction back; nothing was replayed; the next statement reconnects
    assert sorted(r.name for r in model.Refs.select()) == ["ref_four"]
    with model.atomic():
        model.Refs.create(name="later")
    assert model.Refs.select().count() == 2


def test_kill_inside_nested_savepoint(model: ModuleType) -> None:
    with pytest.raises(ConnectionLostError), model.atomic(), model.atomic():
        model.Refs.create(name="nested")
        kill(model)
        model.Refs.select().count()
    assert not model.conn.database.in_transaction()
    assert model.Refs.select().count() == 1


def test_kill_during_a_read_in_flight(model: ModuleType) -> None:
    """The server drops the connection while a read is running: it reruns once."""
    import dbtools

    db = model.conn.database
    cid = db.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]

    def killer() -> None:
        time.sleep(0.3)
        admin = dbtools.admin_connection()
        with admin.cursor() as cur:
            cur.execute(f"KILL CONNECTION {int(cid)}")
        admin.close()

    t = threading.Thread(target=killer)
    t.start()
    assert db.execute_sql("SELECT SLEEP(1), 7").fetchone()[1] == 7
    t.join()
    assert db.execute_sql("SELECT CONNECTION_ID()").fetchone()[0] != cid


def test_pending_unbuffered_rows_are_not_a_dead_connection(model: ModuleType) -> None:
    import pymysql

    db = model.conn.database
    cid = db.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]
    cur = db.connection().cursor(pymysql.cursors.SSCursor)
    cur.execute("SELECT seq FROM seq_1_to_100000")
    assert cur.fetchone() == (1,)  # the rest is still streaming in
    with pytest.warns(UserWarning, match="unbuffered"):  # PyMySQL drains the rest first
        assert db.execute_sql("SELECT CONNECTION_ID()").fetchone()[0] == cid  # same connection


def test_lost_insert_reply_never_replayed(fresh_valar_db: dict[str, Any]) -> None:
    proxy = DroppingProxy((fresh_valar_db["host"], fresh_valar_db["port"]))
    try:
        with opened(dict(fresh_valar_db, host="127.0.0.1", port=proxy.port)) as model, \
                guard.writes_enabled():  # fmt: skip
            assert model.Refs.select().count() == 1
            proxy.arm(b"lost_reply")
            with pytest.raises(WriteMayHaveBeenAppliedError, match="may or may not"):
                model.Refs.create(name="lost_reply")
            assert proxy.dropped.is_set()
            # reconnects for the next statement; the INSERT ran exactly once, never twice
            assert model.Refs.select().where(model.Refs.name == "lost_reply").count() == 1
    finally:
        proxy.close()


def test_lost_commit_reply(fresh_valar_db: dict[str, Any]) -> None:
    proxy = DroppingProxy((fresh_valar_db["host"], fresh_valar_db["port"]))
    try:
        with opened(dict(fresh_valar_db, host="127.0.0.1", port=proxy.port)) as model, \
                guard.writes_enabled():  # fmt: skip
            with pytest.raises(WriteMayHaveBeenAppliedError), model.atomic():
                model.Refs.create(name="committed_maybe")
                proxy.arm(b"COMMIT")
            assert proxy.dropped.is_set()
            assert model.Refs.select().where(model.Refs.name == "committed_maybe").count() == 1
    finally:
        proxy.close()
