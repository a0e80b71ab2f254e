"""SSH tunnels to Valar: one :class:`Tunnel` interface, two back ends; the only SSH code.

* :class:`SshtunnelTunnel` (``ssh_backend: "sshtunnel"``, the default): paramiko in a thread.
* :class:`OpenSshTunnel` (``ssh_backend: "openssh"``): an ``ssh -N -L`` child process; about twice
  the throughput on blobs, needs the ``ssh`` client and key (or agent) authentication.

Both listen on 127.0.0.1 only, verify the server's host key against ``~/.ssh/known_hosts`` (or
``ssh_known_hosts``) and refuse an unknown host unless ``ssh_host_key_policy`` is
``"accept-new"`` (a known host with a *different* key is always refused), send keepalives, give
up connecting or authenticating after ``ssh_connect_timeout`` seconds, and leave no thread or
child process behind after :meth:`Tunnel.stop`. :meth:`Tunnel.ensure_alive` restarts a dead
tunnel on the same local port when it can (else on a new one) and returns the endpoint.

>>> from valarfast.config import load_settings
>>> s = load_settings({"database": "valar", "ssh_host": "valar.org", "ssh_backend": "openssh"})
>>> t = make_tunnel(s.ssh)
>>> type(t).__name__, t.is_alive()
('OpenSshTunnel', False)
"""

from __future__ import annotations

import abc
import logging
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from valarfast.config import SshSettings
from valarfast.errors import TunnelError

logger = logging.getLogger("valarfast")

LOCALHOST = "127.0.0.1"


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOCALHOST, port))
        except OSError:
            return False
        return True


def known_hosts_file(settings: SshSettings) -> Path:
    """The known_hosts file used to check the server's key."""
    return Path(settings.known_hosts or Path.home() / ".ssh" / "known_hosts").expanduser()


def _host_label(settings: SshSettings) -> str:
    return settings.host if settings.port == 22 else f"[{settings.host}]:{settings.port}"


class Tunnel(abc.ABC):
    """A local port on 127.0.0.1 forwarded through SSH to ``remote_host:remote_port``."""

    def __init__(self, settings: SshSettings) -> None:
        self.settings = settings
        self.local_port: int | None = settings.local_port
        self._lock = threading.RLock()

    @abc.abstractmethod
    def _start(self, port: int) -> None:
        """Start forwarding ``port``; raise TunnelError (within the time-out) on failure."""

    @abc.abstractmethod
    def _stop(self) -> None:
        """Stop forwarding; leave no thread or process behind. Idempotent."""

    @abc.abstractmethod
    def is_alive(self) -> bool:
        """Whether the tunnel is up (the SSH session is alive)."""

    def start(self) -> int:
        """Start the tunnel (no-op if alive); returns the local port."""
        with self._lock:
            if self.is_alive():
                assert self.local_port is not None
                return self.local_port
            port = self.local_port or free_local_port()
            self._start(port)
            self.local_port = port
            logger.info(
                "SSH tunnel %s -> %s up on %s:%s",
                _host_label(self.settings),
                f"{self.settings.remote_host}:{self.settings.remote_port}",
                LOCALHOST,
                port,
            )
            return port

    def stop(self) -> None:
        """Stop the tunnel (idempotent)."""
        with self._lock:
            self._stop()

    def ensure_alive(self) -> tuple[str, int]:
        """The endpoint to connect to, restarting the tunnel first if it died.

        The same local port is reused when it is free again; otherwise a new one is taken.
        """
        with self._lock:
            if not self.is_alive():
                if self.local_port is not None:
                    logger.warning("the SSH tunnel is down; restarting it")
                    self._stop()
                    if not port_is_free(self.local_port) and self.settings.local_port is None:
                        self.local_port = None  # taken meanwhile: re-point to a new port
                self.start()
            assert self.local_port is not None
            return LOCALHOST, self.local_port

    def __enter__(self) -> Tunnel:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "up" if self.is_alive() else "down"
        return (
            f"{type(self).__name__}({_host_label(self.settings)} -> "
            f"{self.settings.remote_host}:{self.settings.remote_port}, "
            f"local port {self.local_port}, {state})"
        )


# --- sshtunnel (paramiko) back end ---------------------------------------------------------------


def _load_host_key(settings: SshSettings) -> Any:
    """The paramiko key the server must present, or None if unknown and the policy accepts that."""
    import paramiko

    path = known_hosts_file(settings)
    keys = paramiko.HostKeys()
    if path.is_file():
        try:
            keys.load(str(path))
        except (OSError, paramiko.SSHException) as e:
            raise TunnelError(f"cannot read known hosts file {path}: {e}") from e
    entry = keys.lookup(_host_label(settings))
    if entry:
        # one key is checked; prefer the strongest type the server is likely to offer
        for kind in ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "ssh-rsa"):
            if kind in entry:
                return entry[kind]
        return next(iter(entry.values()))
    if settings.host_key_policy == "accept-new":
        logger.warning(
            "accepting the unchecked host key of %s (ssh_host_key_policy accept-new)",
            _host_label(settings),
        )
        return None
    raise TunnelError(
        f"the SSH host {_host_label(settings)} is not in {path}: add its key (e.g. "
        f"`ssh-keyscan -p {settings.port} {settings.host} >> {path}` after checking the "
        "fingerprint) or set ssh_host_key_policy to 'accept-new'"
    )


def _forwarder_class() -> Any:
    """SSHTunnelForwarder with a bounded TCP connect and bounded banner/auth time-outs."""
    import paramiko
    import sshtunnel

    class BoundedForwarder(sshtunnel.SSHTunnelForwarder):
        connect_timeout = 10.0
        _valar_error: BaseException | None = None

        def _get_transport(self) -> paramiko.Transport:
            try:
                sock = socket.create_connection(
                    (self.ssh_host, self.ssh_port), timeout=self.connect_timeout
                )
            except OSError as e:
                self._valar_error = e
                raise
            sock.settimeout(None)
            transport = paramiko.Transport(sock)
            transport.banner_timeout = self.connect_timeout
            transport.auth_timeout = self.connect_timeout
            transport.handshake_timeout = self.connect_timeout
            transport.set_keepalive(int(self.set_keepalive))
            transport.daemon = True
            return transport

        def _connect_to_gateway(self) -> None:
            try:
                super()._connect_to_gateway()
            except Exception as e:  # a host key mismatch, a time-out, ...: keep it for the error
                self._valar_error = e
                transport = getattr(self, "_transport", None)
                if transport is not None:
                    transport.close()
                raise  # sshtunnel then makes no forward server (SSHException/OSError)

    return BoundedForwarder


class SshtunnelTunnel(Tunnel):
    """The tunnel as a thread of this process (sshtunnel + paramiko)."""

    def __init__(self, settings: SshSettings) -> None:
        super().__init__(settings)
        self._forwarder: Any = None

    def _start(self, port: int) -> None:
        import sshtunnel

        s = self.settings
        host_key = _load_host_key(s)
        pkey: Any = None
        if s.pkey is not None:
            if not Path(s.pkey).is_file():
                raise TunnelError(f"SSH key file {s.pkey} does not exist")
            pkey = s.pkey
        kwargs: dict[str, Any] = {}
        if pkey is not None or s.password is not None:
            kwargs.update(allow_agent=False, host_pkey_directories=[])
        cls = _forwarder_class()
        cls.connect_timeout = s.connect_timeout
        fwd = cls(
            (s.host, s.port),
            ssh_username=s.user or _default_user(),
            ssh_pkey=pkey,
            ssh_private_key_password=s.pkey_password,
            ssh_password=s.password,
            ssh_host_key=host_key,
            remote_bind_address=(s.remote_host, s.remote_port),
            local_bind_address=(LOCALHOST, port),
            set_keepalive=s.keepalive,
            mute_exceptions=False,
            logger=_quiet_logger(),
            **kwargs,
        )
        fwd.daemon_forward_servers = True
        fwd.daemon_transport = True
        try:
            fwd.start()
        except (sshtunnel.BaseSSHTunnelForwarderError, Exception) as e:
            cause = getattr(fwd, "_valar_error", None) or e
            _discard_forwarder(fwd)
            raise TunnelError(self._explain(cause)) from cause
        self._forwarder = fwd

    def _explain(self, e: BaseException) -> str:
        import paramiko

        where = f"SSH to {_host_label(self.settings)}"
        if isinstance(e, paramiko.BadHostKeyException) or "host key" in str(e).lower():
            return (
                f"{where} refused: the server's host key does not match "
                f"{known_hosts_file(self.settings)} (possible man-in-the-middle)"
            )
        if isinstance(e, (socket.timeout, TimeoutError)):
            return f"{where} timed out after {self.settings.connect_timeout:g} s"
        if isinstance(e, OSError):
            return f"{where} failed: {e.strerror or e}"
        return (
            f"{where} failed: could not connect or authenticate as "
            f"{self.settings.user or _default_user()!r} (check the host, ssh_user and "
            f"ssh_pkey; {e})"
        )

    def _stop(self) -> None:
        fwd, self._forwarder = self._forwarder, None
        if fwd is not None:
            _stop_forwarder(fwd, self.local_port)

    def is_alive(self) -> bool:
        fwd = self._forwarder
        return fwd is not None and bool(fwd.is_active) and bool(fwd.is_alive)


def _discard_forwarder(fwd: Any) -> None:
    """Clean up a forwarder whose start() failed (its servers never served: no shutdown())."""
    for srv in getattr(fwd, "_server_list", []):
        srv.server_close()
    fwd._server_list = []
    transport = getattr(fwd, "_transport", None)
    if transport is not None:
        transport.close()
        if transport.is_alive():
            transport.join(timeout=5)


def _stop_forwarder(fwd: Any, port: int | None = None) -> None:
    """Stop a forwarder and wait (bounded) for its transport and server threads to end."""
    try:
        fwd.stop(force=True)
    except Exception:
        logger.debug("stopping the sshtunnel forwarder failed", exc_info=True)
    transport = getattr(fwd, "_transport", None)
    if transport is not None:
        transport.close()
        if transport.is_alive() and transport is not threading.current_thread():
            transport.join(timeout=5)
    if port is not None:
        for t in threading.enumerate():  # sshtunnel names its server thread Srv-<port>
            if t.name == f"Srv-{port}" and t is not threading.current_thread():
                t.join(timeout=5)


def _quiet_logger() -> logging.Logger:
    log = logging.getLogger("valarfast.sshtunnel")
    log.setLevel(logging.CRITICAL)  # sshtunnel logs errors we re-raise as TunnelError
    return log


def _default_user() -> str:
    import getpass

    return getpass.getuser()


# --- OpenSSH back end ----------------------------------------------------------------------------


class OpenSshTunnel(Tunnel):
    """The tunnel as an ``ssh -N -L 127.0.0.1:PORT:host:port`` child process."""

    def __init__(self, settings: SshSettings) -> None:
        super().__init__(settings)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self._finalizer: Any = None

    def command(self, port: int) -> list[str]:
        """The ``ssh`` command line for forwarding ``port``."""
        s = self.settings
        ssh = shutil.which("ssh")
        if ssh is None:
            raise TunnelError(
                "ssh_backend 'openssh' needs the OpenSSH client: install it "
                "(apt-get install -y openssh-client) or use ssh_backend 'sshtunnel'"
            )
        strict = "yes" if s.host_key_policy == "strict" else "accept-new"
        alive = max(1, round(s.keepalive))
        cmd = [
            ssh, "-N", "-T",
            "-L", f"{LOCALHOST}:{port}:{s.remote_host}:{s.remote_port}",
            "-p", str(s.port),
            "-o", "BatchMode=yes",
            "-o", "ExitOnForwardFailure=yes",
            "-o", f"ServerAliveInterval={alive}",
            "-o", "ServerAliveCountMax=3",
            "-o", f"ConnectTimeout={max(1, round(s.connect_timeout))}",
            "-o", f"StrictHostKeyChecking={strict}",
            "-o", "ControlMaster=no",
            "-o", "ControlPath=none",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip
        if s.known_hosts:
            cmd += ["-o", f"UserKnownHostsFile={s.known_hosts}", "-o", "GlobalKnownHostsFile=none"]
        if s.pkey:
            cmd += ["-i", s.pkey, "-o", "IdentitiesOnly=yes"]
        if s.user:
            cmd += ["-l", s.user]
        return [*cmd, "--", s.host]

    def _start(self, port: int) -> None:
        if self.settings.pkey and not Path(self.settings.pkey).is_file():
            raise TunnelError(f"SSH key file {self.settings.pkey} does not exist")
        cmd = self.command(port)
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child; _stop closes
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # Ctrl-C in a notebook does not kill it; close() does
        )
        self._proc, self._stderr = proc, stderr
        self._finalizer = weakref.finalize(self, _kill, proc)
        deadline = time.monotonic() + 2 * self.settings.connect_timeout + 5
        while True:
            if proc.poll() is not None:
                msg = self._stderr_text()
                self._stop()
                raise TunnelError(
                    f"ssh to {_host_label(self.settings)} exited ({proc.returncode}): "
                    f"{msg or 'no message'}"
                )
            if _accepts(port):
                return
            if time.monotonic() > deadline:
                self._stop()
                raise TunnelError(
                    f"ssh to {_host_label(self.settings)} did not open local port {port} within "
                    f"{2 * self.settings.connect_timeout + 5:g} s"
                )
            time.sleep(0.02)

    def _stderr_text(self) -> str:
        f = self._stderr
        if f is None:
            return ""
        f.seek(0)
        lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines()]
        return "; ".join([ln for ln in lines if ln][-3:])[-600:]

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _kill(proc)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)
        except ProcessLookupError:
            pass
    else:
        proc.wait()


# back end name -> class
BACKENDS: dict[str, type[Tunnel]] = {"sshtunnel": SshtunnelTunnel, "openssh": OpenSshTunnel}


def make_tunnel(settings: SshSettings) -> Tunnel:
    """The tunnel for ``settings.backend`` (not started)."""
    return BACKENDS[settings.backend](settings)


__all__ = [
    "BACKENDS",
    "OpenSshTunnel",
    "SshtunnelTunnel",
    "Tunnel",
    "free_local_port",
    "make_tunnel",
]
