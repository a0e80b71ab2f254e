"""``valarfast cache info | clear | verify``: look after the local blob cache.

The directory comes from ``--dir``, else from the cache keys of the first config file found
(``cache_dir``), else ``$XDG_CACHE_HOME/valarfast``. ``verify`` exits 1 when it found (and
removed) bad entries, so scripts notice.

>>> import tempfile
>>> main(["--dir", tempfile.mkdtemp(), "verify"])
checked 0 entries: 0 ok, 0 bad
0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from valarfast.cache import BlobCache, CacheInfo, default_directory

__all__ = ["configure", "main", "run"]


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _config_settings() -> dict[str, Any]:
    """The first config file's mapping (only cache keys matter here), or {} when there is none."""
    try:
        from valarfast.connection import Valar

        candidates: list[str | Path] = [p for p in Valar.get_preferred_paths() if p is not None]
    except ImportError:
        env = os.environ.get("VALARPY_CONFIG")
        candidates = [env] if env else []
    for candidate in candidates:
        path = Path(candidate).expanduser()
        if path.is_file():
            with path.open(encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
    return {}


def _cache_for(args: argparse.Namespace) -> BlobCache:
    if args.dir is not None:
        return BlobCache(args.dir)
    settings = _config_settings()
    found = BlobCache.from_settings({**settings, "cache": True})
    return found if found is not None else BlobCache(default_directory())


def _info(cache: BlobCache) -> int:
    info: CacheInfo = cache.info()
    print(f"directory   {info.directory}")
    print(f"limit       {_mb(info.max_bytes)}")
    print(f"entries     {info.entries:,} ({_mb(info.total_bytes)})")
    for kind, (count, size) in info.by_kind.items():
        print(f"  {kind:<18}{count:,} ({_mb(size)})")
    print(f"temp files  {info.temp_files}")
    print(f"oldest use  {_when(info.oldest)}")
    print(f"newest use  {_when(info.newest)}")
    return 0


def _clear(cache: BlobCache) -> int:
    removed, freed = cache.clear()
    print(f"removed {removed:,} files ({_mb(freed)}) from {cache.directory}")
    return 0


def _verify(cache: BlobCache) -> int:
    report = cache.verify()
    print(f"checked {report.checked:,} entries: {report.ok:,} ok, {len(report.bad)} bad")
    for path, problem in report.bad:
        print(f"  removed {path}: {problem}")
    if report.temp_removed:
        print(f"removed {report.temp_removed} temporary files left by interrupted writes")
    return 1 if report.bad else 0


_ACTIONS: dict[str, Callable[[BlobCache], int]] = {
    "info": _info,
    "clear": _clear,
    "verify": _verify,
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the cache arguments to a (sub-)parser: ``[--dir DIR] {info,clear,verify}``."""
    parser.add_argument("action", nargs="?", choices=sorted(_ACTIONS), default="info")
    parser.add_argument("--dir", default=None, help="cache directory (default: from config or XDG)")


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``cache`` command; the exit code."""
    return _ACTIONS[args.action](_cache_for(args))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m valarfast.cache_cli [--dir DIR] {info,clear,verify}``."""
    parser = argparse.ArgumentParser(prog="valarfast cache", description=__doc__.split("\n")[0])
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (OSError, ValueError, TypeError) as e:
        print(f"valarfast cache: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
