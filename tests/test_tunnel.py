"""SSH tunnels (both back ends) through a real sshd to the real MariaDB, and their faults.

Every fault must end in a clear error within a bounded time, and nothing (thread or child
process) may outlive ``close()`` or the ``opened()`` block (the ``no_leaks`` fixture).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sshd import SshServer, free_port, no_leaks_fixture, sshd_server_fixture  # noqa: F401

from valarfast.connection import Valar, opened
from valarfast.errors import TunnelError
from valarfast.tunnel import OpenSshTunnel, SshtunnelTunnel

pytestmark = [pytest.mark.sshd, pytest.mark.usefixtures("no_leaks")]

BACKENDS = ["sshtunnel", "openssh"]
BOUND = 30.0  # a hang detector, not a speed goal: every failure must come well within this
T = TypeVar("T")


def config(db: dict[str, Any], server: SshServer, backend: str, **ssh: Any) -> dict[str, Any]:
    """A config reaching the test MariaDB through the test sshd (remote end: MariaDB's port)."""
    direct = {k: v for k, v in db.items() if k not in ("host", "port")}
    return {
        **direct,
        "remote_bind_host": db["host"],
        "remote_bind_port": db["port"],
        **server.config(ssh_backend=backend, **ssh),
    }


def bounded(fn: Callable[[], T]) -> T:
    start = time.monotonic()
    try:
        return fn()
    finally:
        assert time.monotonic() - start < BOUND


def listen_addresses(port: int) -> set[str]:
    """Addresses listening on TCP ``port`` (IPv4 and IPv6), from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                found.add(addr)
    return found


@pytest.mark.parametrize("backend", BACKENDS)
def test_query_through_tunnel(
    valar_db: dict[str, Any], sshd_server: SshServer, backend: str
) -> None:
    valar = Valar(config(valar_db, sshd_server, backend))
    with valar:
        tunnel = valar.tunnel
        assert tunnel is not None and tunnel.is_alive()
        assert isinstance(tunnel, SshtunnelTunnel if backend == "sshtunnel" else OpenSshTunnel)
        port = tunnel.local_port
        assert port is not None
        assert listen_addresses(port) == {"0100007F"}  # 127.0.0.1 only
        assert valar.database.connect_params["port"] == port
        from valarfast.model import Refs

        assert [r.name for r in Refs.select()] == ["ref_four"]
    assert not tunnel.is_alive()
    assert listen_addresses(port) == set()


@pytest.mark.parametrize("backend", BACKENDS)
def test_opened_stops_tunnel_on_exception(
    valar_db: dict[str, Any], sshd_server: SshServer, backend: str
) -> None:
    with pytest.raises(RuntimeError), opened(config(valar_db, sshd_server, backend)) as model:
        tunnel = model.conn.tunnel
        assert model.Refs.select().count() == 1
        raise RuntimeError
    assert not tunnel.is_alive()


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_host_key(valar_db: dict[str, Any], sshd_server: SshServer, backend: str) -> None:
    cfg = config(valar_db, sshd_server, backend, ssh_known_hosts=str(sshd_server.wrong_known_hosts))
    with pytest.raises(TunnelError, match=r"(?i)host key"):
        bounded(Valar(cfg).open)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_host_refused_unless_accept_new(
    valar_db: dict[str, Any], sshd_server: SshServer, backend: str, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    shutil.copy(sshd_server.empty_known_hosts, known)
    cfg = config(valar_db, sshd_server, backend, ssh_known_hosts=str(known))
    with pytest.raises(TunnelError, match=r"(?i)known|host key"):
        bounded(Valar(cfg).open)
    with opened(dict(cfg, ssh_host_key_policy="accept-new")) as model:
        assert model.Refs.select().count() == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_client_key(valar_db: dict[str, Any], sshd_server: SshServer, backend: str) -> None:
    cfg = config(valar_db, sshd_server, backend, ssh_pkey=str(sshd_server.other_key))
    with pytest.raises(TunnelError, match=r"(?i)authenticat|permission denied"):
        bounded(Valar(cfg).open)


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_key_file(valar_db: dict[str, Any], sshd_server: SshServer, backend: str) -> None:
    cfg = config(valar_db, sshd_server, backend, ssh_pkey="/nonexistent/id_ed25519")
    with pytest.raises(TunnelError, match="does not exist"):
        Valar(cfg).open()


@pytest.mark.parametrize("backend", BACKENDS)
def test_ssh_server_down(valar_db: dict[str, Any], sshd_server: SshServer, backend: str) -> None:
    cfg = config(
        valar_db, sshd_server, backend, ssh_port=free_port(), ssh_host_key_policy="accept-new"
    )
    with pytest.raises(TunnelError, match=r"(?i)refused"):
        bounded(Valar(cfg).open)


@pytest.mark.parametrize("backend", BACKENDS)
def test_remote_port_closed(valar_db: dict[str, Any], sshd_server: SshServer, backend: str) -> None:
    cfg = config(valar_db, sshd_server, backend, remote_bind_port=free_port())
    with pytest.raises(TunnelError, match="remote_bind_port"):
        bounded(Valar(cfg).open)


def _kill_tunnel(valar: Valar, server: SshServer) -> None:
    tunnel = valar.tunnel
    if isinstance(tunnel, OpenSshTunnel):
        assert tunnel.pid is not None
        os.kill(tunnel.pid, signal.SIGKILL)
        server.kill_sessions()  # its sshd session may already be gone with the client
    else:  # the sshtunnel thread lives in this process: kill the server side of its session
        assert server.kill_sessions() >= 1
    deadline = time.monotonic() + 10
    while tunnel is not None and tunnel.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tunnel_killed_mid_session_next_read_recovers(
    valar_db: dict[str, Any], sshd_server: SshServer, backend: str
) -> None:
    with opened(config(valar_db, sshd_server, backend)) as model:
        tunnel = model.conn.tunnel
        port = tunnel.local_port
        assert model.Refs.select().count() == 1
        _kill_tunnel(model.conn, sshd_server)
        assert not tunnel.is_alive()
        assert bounded(lambda: model.Refs.select().count()) == 1
        assert tunnel.is_alive() and tunnel.local_port == port  # restarted on the same port
        _kill_tunnel(model.conn, sshd_server)  # and again, inside a fresh read
        assert [r.name for r in model.Refs.select()] == ["ref_four"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_ssh_server_gone_mid_session(
    valar_db: dict[str, Any], backend: str, tmp_path: Path
) -> None:
    """The SSH server dies for good: the next read fails with TunnelError, quickly, no hang."""
    server = SshServer.start(tmp_path / "sshd")
    try:
        with opened(config(valar_db, server, backend)) as model:
            assert model.Refs.select().count() == 1
            server.stop()
            with pytest.raises(TunnelError, match=r"(?i)refused"):
                bounded(lambda: model.Refs.select().count())
    finally:
        server.stop()
