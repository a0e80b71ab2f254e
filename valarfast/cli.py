"""The command line: ``valarfast [command] [options]`` (also ``python -m valarfast``).

Commands come from :data:`COMMANDS` (name -> ``"module:function"``, imported only when used);
each function takes the remaining arguments and returns an exit code. Adding a command is one
line. A user error prints one line (``valarfast: error: ...``) and exits with 1, no traceback.

>>> sorted(COMMANDS)[:2]
['cache', 'demo']
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import peewee

from valarfast.errors import ValarError

# command -> (where its main(argv) -> int lives, one-line help); the first is the default
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("valarfast.cli:info_main", "check the connection and count the rows of every table"),
    "tunnel": ("valarfast.cli:tunnel_main", "open the configured SSH tunnel and hold it"),
    "demo": ("valarfast.demo:main", "try valarfast on a local sandbox (SQLite, no server)"),
    "cache": ("valarfast.cache_cli:main", "inspect or clear the local blob cache"),
}
DEFAULT_COMMAND = "info"

# errors that are the user's (config, network, server): one line, exit 1
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValarError,
    OSError,  # FileNotFoundError, ConnectionError, ...
    ValueError,
    TypeError,
    LookupError,
    peewee.PeeweeException,
)


def _load(target: str) -> Callable[[list[str]], int | None]:
    module, _, function = target.partition(":")
    fn = getattr(importlib.import_module(module), function)
    return fn


def _config_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument(
        "--config", "-c", default=None,
        help="JSON config file (default: $VALARPY_CONFIG, then ~/.valarpy/...)",
    )  # fmt: skip
    return p


def info_main(argv: list[str]) -> int:
    """``valarfast info``: print the lines of :func:`valarfast.valarpy_info`."""
    args = _config_parser("valarfast info", COMMANDS["info"][1]).parse_args(argv)
    from valarfast.connection import valarpy_info

    for line in valarpy_info(args.config):
        print(line, flush=True)
    return 0


def tunnel_main(argv: list[str], stop: threading.Event | None = None) -> int:
    """``valarfast tunnel``: start the config's SSH tunnel, print its port, hold it until Ctrl-C."""
    args = _config_parser("valarfast tunnel", COMMANDS["tunnel"][1]).parse_args(argv)
    from valarfast.config import find_extant_path, get_preferred_paths, load_settings
    from valarfast.tunnel import make_tunnel

    config: Any = args.config or find_extant_path(*get_preferred_paths())
    settings = load_settings(config)
    if settings.ssh is None:
        raise ValarError(
            f"the config {settings.source} has no ssh_host: there is no tunnel to open"
        )
    stop = stop or threading.Event()
    with make_tunnel(settings.ssh) as tunnel:
        host, port = tunnel.ensure_alive()
        print(
            f"tunnel up: {host}:{port} -> {settings.ssh.remote_host}:{settings.ssh.remote_port}"
            f" via {settings.ssh.host}; connect with host {host!r}, port {port}. Ctrl-C stops it",
            flush=True,
        )
        try:
            while not stop.wait(2.0):
                tunnel.ensure_alive()  # restarts it on the same port if it died
        except KeyboardInterrupt:
            print("tunnel closed", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the exit code (0 ok, 1 user error, 2 usage, 130 Ctrl-C)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print("usage: valarfast [command] [options]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<8} {text}")
        print(f"\ndefault: {DEFAULT_COMMAND}; `valarfast COMMAND --help` for its options")
        return 0
    if args and args[0] in COMMANDS:
        name, rest = args[0], args[1:]
    elif args and not args[0].startswith("-"):
        print(
            f"valarfast: error: unknown command {args[0]!r}; choose from {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    else:
        name, rest = DEFAULT_COMMAND, args
    try:
        fn = _load(COMMANDS[name][0])
        code = fn(rest)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader left (`valarfast info | head`): quiet, as `cat` would be
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no 2nd error at exit
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the signal
    except USER_ERRORS as e:
        print(f"valarfast {name}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    return int(code or 0)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    own = isinstance(e, ValarError) or type(e).__module__ in ("builtins", "valarfast.errors")
    return text if own else f"{text} ({type(e).__module__}.{type(e).__name__})"


__all__ = ["COMMANDS", "main"]
