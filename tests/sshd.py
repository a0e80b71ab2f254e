"""A throwaway OpenSSH server for tests: ``sshd -D`` on 127.0.0.1 with its own keys and config.

>>> with SshServer.start(Path("/tmp/x")) as server:      # doctest: +SKIP
...     server.config(remote_bind_port=3306)             # ssh_* keys for a valarfast config
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

SSHD = "/usr/sbin/sshd"
INSTALL_HINT = "install it: apt-get install -y openssh-server openssh-client"


class SshdMissing(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> Path:
    """Make an ed25519 key pair at ``path`` (and ``path.pub``); returns the private key path."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "valarfast-test", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=20,
    )
    return path


def children_of(pid: int) -> list[int]:
    """Direct child pids of ``pid`` (Linux /proc)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


class SshServer:
    """A running sshd: ``port``, ``client_key``, ``known_hosts`` (trusting its host key)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.host_key = root / "host_ed25519"
        self.client_key = root / "client_ed25519"
        self.other_key = root / "other_ed25519"  # a client key the server does not know
        self.known_hosts = root / "known_hosts"
        self.wrong_known_hosts = root / "known_hosts_wrong"
        self.empty_known_hosts = root / "known_hosts_empty"
        self.log = root / "sshd.log"

    @classmethod
    def start(cls, root: Path) -> SshServer:
        if not Path(SSHD).is_file() or shutil.which("ssh-keygen") is None:
            raise SshdMissing(f"{SSHD} or ssh-keygen not found; {INSTALL_HINT}")
        root.mkdir(parents=True, exist_ok=True)
        server = cls(root)
        server._prepare()
        server._run()
        return server

    def _prepare(self) -> None:
        for key in (self.host_key, self.client_key, self.other_key):
            keygen(key)
        wrong_host = keygen(self.root / "impostor_host")
        label = f"[127.0.0.1]:{self.port}"
        host_pub = self.host_key.with_suffix(".pub").read_text().split()
        wrong_pub = wrong_host.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"{label} {host_pub[0]} {host_pub[1]}\n")
        self.wrong_known_hosts.write_text(f"{label} {wrong_pub[0]} {wrong_pub[1]}\n")
        self.empty_known_hosts.write_text("")
        (self.root / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        for key in (self.host_key, self.client_key, self.other_key):
            key.chmod(0o600)
        (self.root / "sshd_config").write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "AllowTcpForwarding yes",
                    "StrictModes no",
                    "UsePAM no",
                    "UseDNS no",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )

    def _run(self) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited at start: {self.log.read_text()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(8).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("sshd did not start listening within 10 s")

    def config(self, **extra: Any) -> dict[str, Any]:
        """The ssh_* keys of a valarfast config reaching this server (overridable)."""
        return {
            "ssh_host": "127.0.0.1",
            "ssh_port": self.port,
            "ssh_user": os.environ.get("USER") or "root",
            "ssh_pkey": str(self.client_key),
            "ssh_known_hosts": str(self.known_hosts),
            "ssh_connect_timeout": 5,
            **extra,
        }

    def kill_sessions(self) -> int:
        """Kill every SSH session (the per-connection sshd children); the listener stays."""
        assert self.proc is not None
        pids = children_of(self.proc.pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            for pid in children_of(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def __enter__(self) -> SshServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- pytest fixtures (import them into a test module to use them) ------------------------------

import threading  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="module", name="sshd_server")
def sshd_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A running sshd on 127.0.0.1 (fails, never skips, when openssh-server is missing)."""
    try:
        server = SshServer.start(tmp_path_factory.mktemp("sshd"))
    except SshdMissing as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def own_children(exclude: set[int]) -> set[int]:
    return {p for p in children_of(os.getpid()) if p not in exclude and _is_running(p)}


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(name="no_leaks")
def no_leaks_fixture(sshd_server: SshServer) -> Iterator[None]:
    """Fail if a test leaves a thread or a child process behind (the sshd itself excepted)."""
    assert sshd_server.proc is not None
    keep = {sshd_server.proc.pid}
    threads = set(threading.enumerate())
    children = own_children(keep)
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        new_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        new_children = own_children(keep) - children
        if not new_threads and not new_children:
            return
        time.sleep(0.05)
    assert not new_threads, f"threads left over: {[t.name for t in new_threads]}"
    assert not new_children, f"child processes left over: {sorted(new_children)}"
