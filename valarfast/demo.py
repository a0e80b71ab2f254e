"""``valarfast demo``: valarfast at work on a sandbox Valar in a local SQLite file, no server.

It builds (or reuses) a synthetic Valar with :mod:`valarfast.sandbox` in a SQLite file (default
``$XDG_DATA_HOME/valarfast/sandbox.sqlite``, i.e. ``~/.local/share/valarfast/sandbox.sqlite``),
fetches the MI feature of every well of its runs as one matrix with
:func:`valarfast.batch.well_features`, times it next to the valarpy + sauronlab way on the same
rows (written out below, valarpy is not needed), checks that both give the same bits, and with
``--plot`` draws a heat map of MI per well over time (matplotlib, the ``plot`` extra).

The file holds a marker (``valarfast_meta``): the valarfast version and model digest it was
built with, and the sandbox's size. A file that is not a SQLite database, not a sandbox, built by
another version or of another size is never touched without ``--force``.

>>> main(["--path", "/tmp/sandbox.sqlite", "--frames", "2000"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import peewee

from valarfast import sqlite_schema
from valarfast.errors import ValarError

__all__ = ["DemoError", "default_path", "main"]

DEFAULT_RUNS = 2
DEFAULT_FRAMES = 50_000
WELLS_PER_RUN = 96
SEED = 0
FEATURE = "MI"
REPEATS = 5
MAX_MATRIX_BYTES = 1 << 30
SANDBOX_KEY = "sandbox"  # valarfast_meta key: JSON of what the sandbox was built with

NEXT_STEPS = """\
next: point valarfast at your real Valar (MariaDB, reached through SSH)
  1. a tunnel: `ssh -L 53419:localhost:3306 you@valar-host` (your SSH key in ~/.ssh, an account
     there), or let valarfast open it: add "ssh_host", "ssh_user", "ssh_pkey" to the config
  2. the config ~/.valarpy/connection.json (or $VALARPY_CONFIG):
     {"database": "valar", "user": "...", "password": "...", "host": "127.0.0.1", "port": 53419}
  3. check it: `valarfast info` (read-only; writing stays off unless you enable it)
  4. in Python: `with valarfast.opened() as model:
         m = valarfast.batch.well_features(runs=[...], feature="MI")`"""


class DemoError(ValarError):
    """A problem with the demo's input (path, file, options): one line for the user."""


def default_path() -> Path:
    """Where the sandbox lives unless ``--path`` says otherwise.

    >>> default_path().name
    'sandbox.sqlite'
    """
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "valarfast" / "sandbox.sqlite"


# --- options -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="valarfast demo",
        description="Try valarfast on a sandbox Valar in a local SQLite file (no server needed).",
    )
    p.add_argument(
        "--path", type=Path, default=None, help=f"the sandbox file (default: {default_path()})"
    )
    p.add_argument(
        "--runs",
        type=int,
        default=None,
        help=f"runs of {WELLS_PER_RUN} wells in a new sandbox (default {DEFAULT_RUNS})",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help=f"frames per well in a new sandbox (default {DEFAULT_FRAMES})",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE.png",
        help="write a heat map of MI per well over time (needs matplotlib)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="rebuild the sandbox, replacing whatever file is at --path",
    )
    return p


@dataclass(frozen=True)
class Request:
    path: Path
    runs: int | None
    frames: int | None
    plot: Path | None
    force: bool


# (check, message) on the parsed options; the first failing one is reported
_OPTION_CHECKS: tuple[tuple[Callable[[Request], bool], str], ...] = (
    (lambda r: r.runs is None or r.runs >= 1, "--runs must be at least 1"),
    (lambda r: r.frames is None or r.frames >= 10, "--frames must be at least 10"),
    (
        lambda r: (
            (r.runs or DEFAULT_RUNS) * WELLS_PER_RUN * (r.frames or DEFAULT_FRAMES) * 4
            <= MAX_MATRIX_BYTES
        ),
        f"--runs x --frames too large: the matrix would pass {MAX_MATRIX_BYTES >> 30} GiB",
    ),
    (lambda r: r.plot is None or r.plot.suffix.lower() == ".png", "--plot wants a .png file name"),
    (lambda r: r.plot is None or not r.plot.is_dir(), "--plot names a folder, not a file"),
    (lambda r: not r.path.is_dir(), "--path names a folder; give a file name"),
)


def _request(argv: Sequence[str]) -> Request:
    a = _parser().parse_args(list(argv))
    path = (a.path or default_path()).expanduser()
    req = Request(path, a.runs, a.frames, a.plot.expanduser() if a.plot else None, a.force)
    for ok, message in _OPTION_CHECKS:
        if not ok(req):
            raise DemoError(message)
    return req


# --- the file ------------------------------------------------------------------------------------


def _read_marker(path: Path) -> dict[str, str] | None:
    """The file's valarfast marker (None: a SQLite database without one); reads only."""
    with path.open("rb") as f:
        head = f.read(len(sqlite_schema.SQLITE_HEADER))
    if head != sqlite_schema.SQLITE_HEADER:
        raise DemoError(
            f"{path} is not a SQLite file; choose another --path, or add --force to replace it"
        )
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return sqlite_schema.read_marker(conn)
    except sqlite3.DatabaseError as e:
        raise DemoError(
            f"{path} is not a readable SQLite database ({e}); add --force to replace it"
        ) from e
    finally:
        conn.close()


def _problem(marker: dict[str, str] | None, req: Request) -> str | None:
    """Why the existing sandbox cannot be reused as is (None: it can)."""
    if marker is None:
        return "is a SQLite database but not a valarfast sandbox"
    if SANDBOX_KEY not in marker:
        return "is a SQLite Valar made by valarfast, but not a demo sandbox"
    version = sqlite_schema._version()
    built = marker.get("valarfast_version", "an unknown version")
    if built != version:
        return f"is a sandbox built by valarfast {built} (this is valarfast {version})"
    if marker.get("schema_sha1") != sqlite_schema.schema_sha1():
        return "is a sandbox built from another version of the model"
    size = json.loads(marker[SANDBOX_KEY])
    wanted = {"runs": req.runs, "frames": req.frames}
    differs = [f"{v} {k}" for k, v in wanted.items() if v is not None and size.get(k) != v]
    if differs:
        return (
            f"holds a sandbox of {size.get('runs')} runs x {size.get('frames')} frames, "
            f"not {' x '.join(differs)}"
        )
    return None


def _existing(req: Request) -> dict[str, Any] | None:
    """The reusable sandbox's size, or None when one must be built (refused without --force)."""
    if not req.path.exists() or req.path.stat().st_size == 0:
        return None
    if req.force:
        return None
    marker = _read_marker(req.path)
    problem = _problem(marker, req)
    if problem is not None or marker is None:
        raise DemoError(
            f"{req.path} {problem}; rerun with --force to rebuild it (this replaces the file), "
            "or choose another --path"
        )
    return {**json.loads(marker[SANDBOX_KEY]), "created": marker.get("created", "?")}


def _build(req: Request) -> dict[str, Any]:
    """Build a sandbox in a temporary file next to ``path``, then move it into place."""
    from valarfast import guard, sandbox
    from valarfast.connection import Valar

    runs, frames = req.runs or DEFAULT_RUNS, req.frames or DEFAULT_FRAMES
    size: dict[str, Any] = {"runs": runs, "frames": frames, "wells_per_run": WELLS_PER_RUN,
                            "seed": SEED, "features": [FEATURE]}  # fmt: skip
    tmp = req.path.with_name(f".{req.path.name}.building-{os.getpid()}")
    ancestor = next((p for p in req.path.parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise DemoError(f"cannot write the sandbox at {req.path}: {ancestor} is not a folder")
    try:
        req.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        with Valar({"database": str(tmp), "engine": "sqlite"}) as valar:
            sandbox.fill(
                runs=runs,
                wells_per_run=WELLS_PER_RUN,
                frames=frames,
                seed=SEED,
                features=(FEATURE,),
            )
            with guard.writes_enabled():
                valar.database.execute_sql(
                    f"INSERT INTO {sqlite_schema.META_TABLE} (key, value) VALUES (?, ?)",
                    [SANDBOX_KEY, json.dumps(size)],
                )
        os.replace(tmp, req.path)
    except (OSError, peewee.OperationalError) as e:
        raise DemoError(f"cannot write the sandbox at {req.path}: {_reason(e)}") from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return size


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror} ({e.filename})" if e.filename else e.strerror
    return str(e) or type(e).__name__


# --- the job -------------------------------------------------------------------------------------


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def valarpy_way(run_ids: Sequence[int], feature: str) -> tuple[np.ndarray, np.ndarray]:
    """The valarpy + sauronlab way: model rows, ``f.well`` per row, a copy per row, a stack.

    Returns (matrix padded with NaN, well ids), ordered by run as given, then well index.
    """
    from valarfast import model

    feat = model.Features.get(model.Features.name == feature)
    wells = model.Wells.select(model.Wells.id).where(model.Wells.run.in_(list(run_ids)))
    rows = model.WellFeatures.select().where(
        (model.WellFeatures.type == feat) & model.WellFeatures.well.in_(wells)
    )
    per_well: dict[tuple[int, int], tuple[int, np.ndarray]] = {}
    rank = {r: k for k, r in enumerate(run_ids)}
    for f in rows:
        well = f.well  # one more query per row
        values = np.frombuffer(f.floats, dtype=">f4").astype(np.float32)  # a copy per row
        per_well[(rank[well.run_id], well.well_index)] = (well.id, values)
    ordered = [per_well[k] for k in sorted(per_well)]
    width = max((len(v) for _, v in ordered), default=0)
    matrix = np.full((len(ordered), width), np.nan, dtype=np.float32)
    for i, (_, values) in enumerate(ordered):
        matrix[i, : len(values)] = values
    return matrix, np.array([w for w, _ in ordered], dtype=np.int64)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool((a.view(np.uint32) == b.view(np.uint32)).all())


def _fetch_and_compare(path: Path) -> tuple[list[str], Any]:
    """Time both ways on every run of the sandbox; (report lines, the batch matrix)."""
    from valarfast import batch, model
    from valarfast.connection import Valar

    with Valar({"database": str(path), "engine": "sqlite"}):  # read-only: writing stays off
        run_ids = [r.id for r in model.Runs.select(model.Runs.id).order_by(model.Runs.id)]
        fast_s, m = _median_time(
            lambda: batch.well_features(runs=run_ids, feature=FEATURE, cache=False), REPEATS
        )
        slow_s, (old, old_wells) = _median_time(lambda: valarpy_way(run_ids, FEATURE), REPEATS)
    if not (_same_bits(m.values, old) and np.array_equal(m.well_ids, old_wells)):
        raise ValarError("the two ways gave different matrices: this is a bug in valarfast")
    n_wells, n_frames = m.values.shape
    return [
        f"fetched feature {FEATURE!r} of {len(run_ids)} runs: {n_wells} wells x {n_frames:,} "
        f"frames = {m.values.nbytes / 1e6:.1f} MB float32 (median of {REPEATS})",
        f"  valarfast.batch.well_features  {fast_s:8.3f} s  one streamed query into one matrix",
        f"  the valarpy + sauronlab way    {slow_s:8.3f} s  rows, f.well per row, a copy per "
        "row, a stack",
        f"  -> {slow_s / fast_s:.1f}x faster here (local SQLite; the gap grows over a network), "
        "same values bit for bit",
    ], m


# --- the picture ---------------------------------------------------------------------------------

PLOT_HINT = "matplotlib is needed for --plot: pip install 'valarfast[plot]'"


def _check_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise DemoError(PLOT_HINT) from e


def _binned(values: np.ndarray, columns: int = 1000) -> tuple[np.ndarray, int]:
    """Mean of NaN-ignoring bins of frames (so a long run fits in a picture); (matrix, bin)."""
    step = max(1, -(-values.shape[1] // columns))
    width = -(-values.shape[1] // step) * step
    padded = np.full((values.shape[0], width), np.nan, dtype=np.float32)
    padded[:, : values.shape[1]] = values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN bin stays NaN
        return np.nanmean(padded.reshape(values.shape[0], -1, step), axis=2), step


def plot_heatmap(m: Any, out: Path) -> None:
    """A heat map of the matrix ``m`` (wells x frames) written as a PNG to ``out``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image, step = _binned(m.values)
    finite = image[np.isfinite(image)]
    vmin, vmax = (float(np.percentile(finite, q)) for q in (1, 99)) if finite.size else (0.0, 1.0)
    fig = Figure(figsize=(10, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shown = ax.imshow(
        image, aspect="auto", interpolation="nearest", cmap="viridis", vmin=vmin, vmax=vmax,
        extent=(0, image.shape[1] * step, len(image), 0),
    )  # fmt: skip
    for k in np.flatnonzero(np.diff(m.run_ids)) + 1:
        ax.axhline(float(k), color="white", linewidth=0.8)
    ax.set_xlabel(f"frame (mean of {step} per column)" if step > 1 else "frame")
    ax.set_ylabel("well (runs separated by white lines)")
    ax.set_title(f"{m.feature_name} per well over time (sandbox Valar)")
    fig.colorbar(shown, ax=ax, label=m.feature_name)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
    except OSError as e:
        raise DemoError(f"cannot write the plot {out}: {_reason(e)}") from e


# --- the command ---------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    """Run the demo; returns the exit code (errors are :class:`DemoError`, one line)."""
    req = _request(argv)
    if req.plot is not None:
        _check_matplotlib()
    t0 = time.perf_counter()
    try:
        size = _existing(req)
        if size is None:
            size = _build(req)
            how = f"built in {time.perf_counter() - t0:.1f} s"
        else:
            how = f"reused, built {size['created']} UTC"
    except sqlite3.Error as e:
        raise DemoError(f"{req.path}: {e}") from e
    print(
        f"sandbox Valar (SQLite) at {req.path}: {size['runs']} runs x {WELLS_PER_RUN} wells x "
        f"{size['frames']:,} frames, synthetic ({how})",
        flush=True,
    )
    lines, m = _fetch_and_compare(req.path)
    print("\n".join(lines), flush=True)
    if req.plot is not None:
        plot_heatmap(m, req.plot)
        print(f"heat map of {FEATURE} per well over time: {req.plot}", flush=True)
    print(f"done in {time.perf_counter() - t0:.1f} s\n{NEXT_STEPS}", flush=True)
    return 0
