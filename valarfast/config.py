"""Every config source -> one frozen :class:`Settings` object; secrets are masked everywhere.

A config is a mapping with ``database`` (required), the driver's keys (``host``, ``port``,
``user``, ``password``, ``charset``, ...), optional SSH tunnel keys (``ssh_host``, ...) and
``engine`` (``"mysql"`` or ``"sqlite"``). Sources: a mapping (copied), a ``str``/``Path`` of a
JSON file, a list of paths and ``None`` (the first that exists), or ``None`` (``$VALARPY_CONFIG``).

>>> s = load_settings({"database": "valar", "user": "kale", "password": "s3cret"})
>>> s.database, s.engine, s.driver["user"]
('valar', 'mysql', 'kale')
>>> "s3cret" in repr(s)
False
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from valarfast.errors import ConfigNotFoundError

ENV_VAR = "VALARPY_CONFIG"
ENGINES = ("mysql", "sqlite")
SSH_BACKENDS = ("sshtunnel", "openssh")
HOST_KEY_POLICIES = ("strict", "accept-new")
SECRET_KEYS = frozenset({"password", "passwd", "ssh_password", "ssh_pkey_password"})
MASK = "******"

# key -> accepted types, for the driver (PyMySQL connect arguments peewee passes through)
_MYSQL_KEYS: dict[str, tuple[type, ...]] = {
    "host": (str,),
    "port": (int,),
    "user": (str,),
    "password": (str,),
    "passwd": (str,),
    "charset": (str,),
    "collation": (str,),
    "unix_socket": (str,),
    "connect_timeout": (int, float),
    "read_timeout": (int, float),
    "write_timeout": (int, float),
    "init_command": (str,),
    "sql_mode": (str,),
    "ssl": (dict,),
    "ssl_ca": (str,),
    "ssl_cert": (str,),
    "ssl_key": (str,),
    "ssl_disabled": (bool,),
    "ssl_verify_cert": (bool,),
    "ssl_verify_identity": (bool,),
    "local_infile": (bool,),
    "max_allowed_packet": (int,),
    "program_name": (str,),
    "bind_address": (str,),
    "binary_prefix": (bool,),
    "client_flag": (int,),
    "autorollback": (bool,),  # valarpy 3 passed it to peewee; accepted and ignored
}
_SQLITE_KEYS: dict[str, tuple[type, ...]] = {"timeout": (int, float)}
# key -> accepted types, for the SSH tunnel (section 7 of the spec)
_SSH_KEYS: dict[str, tuple[type, ...]] = {
    "ssh_host": (str,),
    "ssh_port": (int,),
    "ssh_user": (str,),
    "ssh_username": (str,),
    "ssh_pkey": (str,),
    "ssh_pkey_password": (str,),
    "ssh_password": (str,),
    "remote_bind_host": (str,),
    "remote_bind_port": (int,),
    "local_bind_port": (int,),
    "ssh_backend": (str,),
    "ssh_host_key_policy": (str,),
    "ssh_known_hosts": (str,),
    "ssh_connect_timeout": (int, float),
    "ssh_keepalive": (int, float),
}
_COMMON_KEYS: dict[str, tuple[type, ...]] = {"database": (str,), "db": (str,), "engine": (str,)}
# the local blob cache (valarfast.cache): on/off, its directory, its size limit (bytes or "20G")
_CACHE_KEYS: dict[str, tuple[type, ...]] = {
    "cache": (bool, str),
    "cache_dir": (str,),
    "cache_max_bytes": (int, str),
}
# keys whose value must be one of a few words
_CHOICES: dict[str, tuple[str, ...]] = {
    "engine": ENGINES,
    "ssh_backend": SSH_BACKENDS,
    "ssh_host_key_policy": HOST_KEY_POLICIES,
}
_ALIASES = {"passwd": "password", "db": "database", "ssh_username": "ssh_user"}
_IGNORED = frozenset({"autorollback"})


def _mask(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (MASK if k in SECRET_KEYS and v else v) for k, v in d.items()}


@dataclass(frozen=True, repr=False)
class SshSettings:
    """Where and how to open an SSH tunnel; ``password``/``pkey_password`` never shown."""

    host: str
    remote_host: str
    remote_port: int
    port: int = 22
    user: str | None = None
    pkey: str | None = None
    password: str | None = None
    pkey_password: str | None = None
    local_port: int | None = None
    backend: str = "sshtunnel"
    host_key_policy: str = "strict"
    known_hosts: str | None = None
    connect_timeout: float = 10.0
    keepalive: float = 15.0

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.__dict__.items() if v is not None}
        return f"SshSettings({_mask({'ssh_' + k: v for k, v in shown.items()})})"


@dataclass(frozen=True, repr=False)
class Settings:
    """A checked config: ``database``, ``engine``, ``driver`` (read-only mapping), ``ssh``.

    >>> Settings("valar", "mysql", MappingProxyType({"password": "x"}))
    Settings(database='valar', engine='mysql', driver={'password': '******'}, ssh=None, source=None)
    """

    database: str
    engine: str = "mysql"
    driver: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    ssh: SshSettings | None = None
    source: Path | None = None
    cache: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # cache keys

    def __repr__(self) -> str:
        return (
            f"Settings(database={self.database!r}, engine={self.engine!r}, "
            f"driver={_mask(self.driver)!r}, ssh={self.ssh!r}, source={self.source!r})"
        )

    __str__ = __repr__


def get_preferred_paths() -> list[Path | None]:
    """Where a config is looked for, best first (``None`` when ``$VALARPY_CONFIG`` is unset)."""
    env = os.environ.get(ENV_VAR)
    home = Path.home()
    return [
        Path(env) if env else None,
        home / ".sauronlab" / "connection.json",
        home / ".valarpy" / "connection.json",
        home / ".valarpy" / "config.json",
        home / ".valarpy" / "read_only.json",
    ]


def find_extant_path(*paths: str | Path | None) -> Path:
    """The first of ``paths`` that exists (``None`` skipped); else ConfigNotFoundError naming all.

    >>> find_extant_path(None, "/no/such/file", "/")
    PosixPath('/')
    """
    tried = [Path(p).expanduser() for p in paths if p is not None]
    for p in tried:
        if p.exists():
            return p
    if not tried:
        raise ConfigNotFoundError(
            f"no valarfast config: no path given and ${ENV_VAR} is not set; "
            f"set {ENV_VAR} to a JSON file or pass a config"
        )
    raise ConfigNotFoundError(
        "no valarfast config found; tried: " + ", ".join(str(p) for p in tried)
    )


def read_json_config(path: str | Path) -> dict[str, Any]:
    """Read one JSON config file: FileNotFoundError (missing or a folder), ValueError (bad JSON)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigNotFoundError(f"valarfast config file {p} does not exist")
    if not p.is_file():
        raise ConfigNotFoundError(f"valarfast config path {p} is not a file (a folder?)")
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        # e.msg names the problem, never the (maybe secret) text around it
        raise ValueError(
            f"invalid JSON in valarfast config {p}, line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    if not isinstance(data, dict):
        raise TypeError(f"valarfast config {p} must hold a JSON object, not {type(data).__name__}")
    return data


def _raw_config(config: Any) -> tuple[dict[str, Any], Path | None]:
    if config is None:
        env = os.environ.get(ENV_VAR)
        path = find_extant_path(env)
        return read_json_config(path), path
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        return read_json_config(path), path.expanduser()
    if isinstance(config, Mapping):
        return dict(config), None
    if isinstance(config, Sequence) and not isinstance(config, (bytes, bytearray)):
        bad = [p for p in config if p is not None and not isinstance(p, (str, os.PathLike))]
        if bad:
            raise TypeError(f"a list config holds paths and None only, not {type(bad[0]).__name__}")
        path = find_extant_path(*config)
        return read_json_config(path), path
    raise TypeError(
        "a valarfast config is a mapping, a path (str or Path), a list of paths, or None; "
        f"got {type(config).__name__}"
    )


def _check_types(raw: Mapping[str, Any], allowed: Mapping[str, tuple[type, ...]]) -> None:
    for key, value in raw.items():
        if not isinstance(key, str):
            raise TypeError(f"config keys are strings, not {type(key).__name__}")
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.75)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown valarfast config key {key!r}{hint}")
        types = allowed[key]
        if value is None:
            continue
        # bool is an int in Python: refuse True as a port
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join(t.__name__ for t in types)
            raise TypeError(
                f"valarfast config key {key!r} must be {names}, not {type(value).__name__}"
            )
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ValueError(f"valarfast config key {key!r} must be one of {list(_CHOICES[key])}")


def _ssh_settings(d: dict[str, Any], driver: dict[str, Any]) -> SshSettings | None:
    ssh = {k: d.pop(k) for k in list(d) if k in _SSH_KEYS}
    ssh = {_ALIASES.get(k, k): v for k, v in ssh.items() if v is not None}
    if not ssh:
        return None
    if "ssh_host" not in ssh:
        keys = ", ".join(sorted(ssh))
        raise ValueError(f"valarfast config has SSH keys ({keys}) but no 'ssh_host'")
    remote_port = ssh.get("remote_bind_port", driver.get("port", 3306))
    return SshSettings(
        host=ssh["ssh_host"],
        port=ssh.get("ssh_port", 22),
        user=ssh.get("ssh_user"),
        pkey=str(Path(ssh["ssh_pkey"]).expanduser()) if "ssh_pkey" in ssh else None,
        password=ssh.get("ssh_password"),
        pkey_password=ssh.get("ssh_pkey_password"),
        remote_host=ssh.get("remote_bind_host", "127.0.0.1"),
        remote_port=remote_port,
        local_port=ssh.get("local_bind_port"),
        backend=ssh.get("ssh_backend", "sshtunnel"),
        host_key_policy=ssh.get("ssh_host_key_policy", "strict"),
        known_hosts=(
            str(Path(ssh["ssh_known_hosts"]).expanduser()) if "ssh_known_hosts" in ssh else None
        ),
        connect_timeout=float(ssh.get("ssh_connect_timeout", 10.0)),
        keepalive=float(ssh.get("ssh_keepalive", 15.0)),
    )


def settings_from_mapping(raw: Mapping[str, Any], source: Path | None = None) -> Settings:
    """Check a config mapping and make :class:`Settings` (the mapping is never mutated)."""
    engine = raw.get("engine", "mysql")
    if engine not in ENGINES:
        raise ValueError(f"valarfast config key 'engine' must be one of {list(ENGINES)}")
    driver_keys = _MYSQL_KEYS if engine == "mysql" else _SQLITE_KEYS
    allowed = {**_COMMON_KEYS, **driver_keys, **_SSH_KEYS, **_CACHE_KEYS}
    _check_types(raw, allowed)
    d = {_ALIASES.get(k, k) if k not in _SSH_KEYS else k: v for k, v in raw.items()}
    if "passwd" in raw and "password" in raw:
        raise ValueError("valarfast config has both 'password' and its alias 'passwd'")
    database = d.pop("database", None)
    d.pop("engine", None)
    if not database:
        where = f" ({source})" if source else ""
        raise ValueError(f"valarfast config{where} has no 'database' (the schema name, e.g. valar)")
    driver = {
        k: v
        for k, v in d.items()
        if k not in _SSH_KEYS and k not in _IGNORED and k not in _CACHE_KEYS
    }
    ssh = _ssh_settings(d, driver)
    if ssh is not None and engine != "mysql":
        raise ValueError("SSH tunnel keys (ssh_host, ...) need engine 'mysql'")
    if ssh is not None and ssh.backend == "openssh" and ssh.password:
        raise ValueError(
            "'ssh_password' needs ssh_backend 'sshtunnel' (the openssh back end runs in BatchMode"
            " and authenticates with keys or an agent)"
        )
    return Settings(
        database=database,
        engine=engine,
        driver=MappingProxyType(driver),
        ssh=ssh,
        source=source,
        cache=MappingProxyType({k: v for k, v in d.items() if k in _CACHE_KEYS}),
    )


def load_settings(config: Any = None) -> Settings:
    """Any accepted config source -> :class:`Settings` (see the module docstring)."""
    if isinstance(config, Settings):
        return config
    raw, source = _raw_config(config)
    return settings_from_mapping(raw, source)


__all__ = [
    "ENV_VAR",
    "Settings",
    "SshSettings",
    "find_extant_path",
    "get_preferred_paths",
    "load_settings",
    "read_json_config",
    "settings_from_mapping",
]
