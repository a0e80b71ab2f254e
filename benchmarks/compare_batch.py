"""valarfast.batch.well_features against the ways Valar's blobs were read before, in one run.

Builds a synthetic Valar (valarfast.sandbox) in its own ``vf_bench_*`` database on the test
server: 2 runs x 96 wells x 150,000 frames of MI (~115 MB of blobs), plus 2 more runs for a
4-run scale case. Then times, in this process (median of several runs, warm server cache):

- ``valarfast``      : batch.well_features(runs, "MI")
- ``valarfast+frame``: the same plus .to_frame()
- ``valarfast out=`` : the same into a caller's matrix (the path that asks the server for
                       ``LENGTH()`` first, so that a corrupt blob never touches ``out``)
- ``valarpy-way``    : what valarpy + sauronlab did (written here, valarpy is not imported):
                       select WellFeatures rows, ``f.well`` per row (one query each), a decoded
                       copy per row, pad and stack
- ``sauronlab-frame``: the same rows, a dict of one pd.Series per well, then a DataFrame
- ``pymysql-floor``  : plain PyMySQL, unbuffered cursor, each row decoded on arrival into a
                       matrix whose width is known in advance (no metadata query): the floor
                       for this driver
- ``pymysql-naive``  : plain PyMySQL, unbuffered cursor, a decoded array per row, then stacked

and the peak RSS of each method run once in a child process of its own (VmRSS after the
imports and the connection, VmHWM after the call).

Run:  python benchmarks/compare_batch.py            (needs MariaDB at 127.0.0.1:3306, root)
      python benchmarks/compare_batch.py --quick    (small data, to check that it works)

The server's InnoDB buffer pool is raised to 1 GiB for the run (printed) so that the data set is
served from memory, and restored at the end. The machine is shared: figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import dbtools  # noqa: E402

FEATURE = "MI"
POOL_BYTES = 1 << 30


# ------------------------------------------------------------------------------------- methods


def m_valarfast(runs: list[int], width: int) -> Any:
    from valarfast import batch

    return batch.well_features(runs=runs, feature=FEATURE).values


def m_valarfast_out(runs: list[int], width: int) -> Any:
    from valarfast import batch

    out = np.empty((96 * len(runs), width), np.float32)
    return batch.well_features(runs=runs, feature=FEATURE, out=out).values


def m_valarfast_frame(runs: list[int], width: int) -> Any:
    from valarfast import batch

    return batch.well_features(runs=runs, feature=FEATURE).to_frame()


def _valarpy_rows(runs: list[int]) -> list[tuple[int, int, np.ndarray]]:
    """valarpy's access pattern: model rows, then ``f.well`` per row (a query each)."""
    from valarfast.model import Features, WellFeatures, Wells

    feature = Features.get(Features.name == FEATURE)
    query = (
        WellFeatures.select()
        .join(Wells)
        .where(Wells.run.in_(runs) & (WellFeatures.type == feature.id))
    )
    out = []
    for f in query:
        well = f.well  # not selected with the row: one more query (N+1)
        out.append((well.run_id, well.well_index, np.frombuffer(f.floats, ">f4").astype("<f4")))
    return out


def m_valarpy_way(runs: list[int], width: int) -> Any:
    rows = _valarpy_rows(runs)
    rank = {r: k for k, r in enumerate(runs)}
    rows.sort(key=lambda t: (rank[t[0]], t[1]))
    n = max(len(a) for _, _, a in rows)
    padded = [np.pad(a, (0, n - len(a)), constant_values=np.nan) for _, _, a in rows]
    return np.vstack(padded)


def m_sauronlab_frame(runs: list[int], width: int) -> Any:
    import pandas as pd

    from valarfast.model import Wells

    rows = _valarpy_rows(runs)
    ids = {(w.run_id, w.well_index): w.id for w in Wells.select().where(Wells.run.in_(runs))}
    series = {ids[(r, i)]: pd.Series(a) for r, i, a in rows}
    return pd.DataFrame.from_dict(series, orient="index")


def _plain_connection(db: str) -> Any:
    import pymysql

    return pymysql.connect(database=db, charset="utf8mb4", **dbtools.server_settings())


def _floor_sql(runs: list[int]) -> str:
    marks = ", ".join(str(int(r)) for r in runs)
    return (
        "SELECT wf.well_id, wf.floats FROM well_features wf JOIN wells w ON w.id = wf.well_id "
        f"JOIN features f ON f.id = wf.type_id WHERE f.name = '{FEATURE}' AND w.run_id IN ({marks})"
    )


def m_pymysql_floor(runs: list[int], width: int, conn: Any = None) -> Any:
    import pymysql.cursors

    cur = conn.cursor(pymysql.cursors.SSCursor)
    cur.execute(_floor_sql(runs))
    out = np.empty((96 * len(runs), width), np.float32)
    for k, (_, blob) in enumerate(cur):
        row = np.frombuffer(blob, ">f4")
        out[k, : len(row)] = row
        out[k, len(row) :] = np.nan
    cur.close()
    return out


def m_pymysql_naive(runs: list[int], width: int, conn: Any = None) -> Any:
    import pymysql.cursors

    cur = conn.cursor(pymysql.cursors.SSCursor)
    cur.execute(_floor_sql(runs))
    arrays = [np.frombuffer(blob, ">f4").astype("<f4") for _, blob in cur]
    cur.close()
    n = max(len(a) for a in arrays)
    return np.vstack([np.pad(a, (0, n - len(a)), constant_values=np.nan) for a in arrays])


METHODS: dict[str, Callable[..., Any]] = {
    "valarfast": m_valarfast,
    "valarfast+frame": m_valarfast_frame,
    "valarfast out=": m_valarfast_out,
    "valarpy-way": m_valarpy_way,
    "sauronlab-frame": m_sauronlab_frame,
    "pymysql-floor": m_pymysql_floor,
    "pymysql-naive": m_pymysql_naive,
}
PLAIN = {"pymysql-floor", "pymysql-naive"}


# ------------------------------------------------------------------------------------ plumbing


def call(method: str, db: str, runs: list[int], width: int, conn: Any) -> Any:
    fn = METHODS[method]
    return fn(runs, width, conn) if method in PLAIN else fn(runs, width)


def child(method: str, db: str, runs: list[int], width: int) -> None:
    """Run one method once; print baseline and peak RSS (bytes) as JSON."""
    import pandas  # noqa: F401 - every method's imports are in the baseline

    from valarfast import batch, model  # noqa: F401
    from valarfast.connection import Valar

    valar = Valar(dbtools.config_for(db)).open()
    conn = _plain_connection(db)
    model.Features.get(model.Features.name == FEATURE)  # the connection is really up
    base = _status_bytes("VmRSS")
    result = call(method, db, runs, width, conn)
    peak = _status_bytes("VmHWM")
    nbytes = int(getattr(result, "nbytes", 0)) or int(result.memory_usage(index=False).sum())
    print(json.dumps({"base": base, "peak": peak, "result_bytes": nbytes}))
    conn.close()
    valar.close()


def _status_bytes(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak) of this process, in bytes.

    Not ``ru_maxrss``: Linux carries it over from the parent across fork + exec, so a child of a
    big parent would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss(method: str, db: str, runs: list[int], width: int) -> dict[str, int]:
    cmd = [sys.executable, __file__, "--child", method, "--db", db, "--width", str(width)]
    cmd += ["--runs", ",".join(map(str, runs))]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def server_setup() -> tuple[int, int]:
    conn = dbtools.admin_connection()
    with conn.cursor() as cur:
        cur.execute("SELECT @@innodb_buffer_pool_size, @@max_allowed_packet")
        pool, packet = (int(x) for x in cur.fetchone())
        if pool < POOL_BYTES:
            cur.execute(f"SET GLOBAL innodb_buffer_pool_size = {POOL_BYTES}")
            print(
                f"SET GLOBAL innodb_buffer_pool_size = {POOL_BYTES} (was {pool}); restored at end"
            )
    conn.close()
    print(f"max_allowed_packet = {packet} (left as is: the sandbox keeps each INSERT below it)")
    return pool, packet


def server_restore(pool: int) -> None:
    if pool < POOL_BYTES:
        conn = dbtools.admin_connection()
        with conn.cursor() as cur:
            cur.execute(f"SET GLOBAL innodb_buffer_pool_size = {pool}")
        conn.close()
        print(f"restored innodb_buffer_pool_size = {pool}")


def build(db: str, frames: int, wells: int) -> tuple[list[int], list[int], int]:
    from valarfast import sandbox
    from valarfast.connection import Valar

    with Valar(dbtools.config_for(db)) as valar:
        valar.open()
        t = time.perf_counter()
        a = sandbox.fill(runs=2, wells_per_run=wells, frames=frames, seed=1, features=(FEATURE,))
        b = sandbox.fill(runs=2, wells_per_run=wells, frames=frames, seed=2, features=(FEATURE,))
        took = time.perf_counter() - t
    total = a.blob_bytes + b.blob_bytes
    print(f"built {db}: 4 runs x {wells} wells x <= {frames} frames, sensors etc.; ")
    print(f"  {total / 1e6:.1f} MB of blobs in {took:.1f} s")
    return list(a.run_ids), list(a.run_ids + b.run_ids), frames


def blob_bytes(db: str, runs: list[int]) -> tuple[int, int]:
    conn = _plain_connection(db)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT SUM(LENGTH(wf.floats)), MAX(LENGTH(wf.floats)) FROM well_features wf "
            f"JOIN wells w ON w.id = wf.well_id WHERE w.run_id IN ({','.join(map(str, runs))})"
        )
        total, largest = cur.fetchone()
    conn.close()
    return int(total), int(largest)


def check_same(db: str, runs: list[int], width: int, conn: Any) -> None:
    """Every method returns the same numbers (bit for bit) before anything is timed."""
    ref = m_valarfast(runs, width)
    for method in ("valarfast out=", "valarpy-way", "pymysql-floor", "pymysql-naive"):
        got = call(method, db, runs, width, conn)
        if not np.array_equal(ref.view(np.uint32), np.asarray(got, np.float32).view(np.uint32)):
            raise SystemExit(f"{method} disagrees with valarfast")
    frame = m_valarfast_frame(runs, width)
    if not np.shares_memory(frame.to_numpy(), frame.to_numpy()):  # pragma: no cover
        raise SystemExit("to_frame copied")


def report(
    label: str, db: str, runs: list[int], width: int, conn: Any, methods: list[str], reps: int
) -> dict[str, float]:
    """Median seconds per method; the methods take turns in each round, in a shuffled order."""
    total, largest = blob_bytes(db, runs)
    print(f"\n== {label}: {len(runs)} runs, {total / 1e6:.1f} MB of blobs, largest {largest} B ==")
    slow = [m for m in methods if m == "sauronlab-frame"]
    fast = [m for m in methods if m not in slow]
    times: dict[str, list[float]] = {m: [] for m in methods}
    for m in fast:
        call(m, db, runs, width, conn)  # warm-up (server cache, imports)
    for k in range(reps):  # a new order each round: no method always follows the same one
        for m in random.Random(k).sample(fast, len(fast)):
            t = time.perf_counter()
            result = call(m, db, runs, width, conn)
            times[m].append(time.perf_counter() - t)
            del result
    for m in slow:  # ~30 s a call: once
        t = time.perf_counter()
        result = call(m, db, runs, width, conn)
        times[m].append(time.perf_counter() - t)
        del result
    med = {m: statistics.median(times[m]) for m in methods}
    for m in methods:
        print(
            f"{m:16s} median {med[m]:8.3f} s  min {min(times[m]):8.3f} s  "
            f"{total / 1e6 / med[m]:8.0f} MB/s  (n={len(times[m])})"
        )
    return med


def width_options(runs: list[int], reps: int, conn: Any) -> None:
    """What finding the matrix width costs: the metadata query with and without LENGTH(), and
    the two stages of each valarfast path next to the floor (same rounds, shuffled order)."""
    from valarfast import batch
    from valarfast.streaming import current_database, query_all

    db = current_database()
    marks = ", ".join(["%s"] * len(runs))
    sql = (
        "SELECT w.id, w.run_id, w.well_index, wf.id, {}, wf.sha1 FROM wells w "
        "LEFT JOIN well_features wf ON wf.well_id = w.id AND wf.type_id = "
        f"(SELECT id FROM features WHERE name = %s) WHERE w.run_id IN ({marks})"
    )
    plan = batch.plan_well_features(runs=runs, feature=FEATURE)
    unsized = batch.plan_well_features(runs=runs, feature=FEATURE, sized=False)
    out = np.empty(plan.shape, np.float32)
    cases = {
        "metadata with LENGTH(floats)": lambda: query_all(db, sql.format("LENGTH(wf.floats)"),
                                                          [FEATURE, *runs]),
        "metadata without LENGTH": lambda: query_all(db, sql.format("0"), [FEATURE, *runs]),
        "plan, sized (out= path)": lambda: batch.plan_well_features(runs=runs, feature=FEATURE),
        "plan, unsized (default)": lambda: batch.plan_well_features(runs=runs, feature=FEATURE,
                                                                    sized=False),
        "streamed read into out=": lambda: batch.read_well_features(plan, out=out),
        "streamed read, width learnt": lambda: batch.read_well_features(unsized),
        "pymysql-floor": lambda: m_pymysql_floor(runs, plan.shape[1], conn),
    }  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in cases}
    for round_ in range(reps):
        for name in random.Random(round_).sample(list(cases), len(cases)):
            t = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - t)
    print("\n-- width discovery and stages (2 runs) --")
    for k, xs in times.items():
        med, low = statistics.median(xs) * 1000, min(xs) * 1000
        print(f"  {k:30s} median {med:7.1f} ms  min {low:7.1f} ms")


def ratios(med: dict[str, float]) -> None:
    vf = med["valarfast"]
    lines = [
        ("valarpy-way / valarfast", med.get("valarpy-way", 0) / vf, ">= 2.5"),
        ("valarfast / pymysql-floor", vf / med["pymysql-floor"], "<= 1.1"),
        ("valarfast out= / pymysql-floor", med["valarfast out="] / med["pymysql-floor"], "(info)"),
        ("valarfast / pymysql-naive", vf / med["pymysql-naive"], "(info)"),
    ]
    if "sauronlab-frame" in med:
        lines.append(
            ("sauronlab-frame / valarfast+frame", med["sauronlab-frame"] / med["valarfast+frame"],
             ">= 80"),
        )  # fmt: skip
    for name, value, goal in lines:
        print(f"  {name:36s} {value:7.2f}x   goal {goal}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small data (a smoke run)")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--keep", action="store_true", help="keep the vf_bench_ database")
    ap.add_argument("--db", help="use an existing vf_bench_ database (child mode / --reuse)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--runs", help=argparse.SUPPRESS)
    ap.add_argument("--width", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.db, [int(r) for r in args.runs.split(",")], args.width)
        return
    frames, wells = (5_000, 96) if args.quick else (150_000, 96)
    pool, _ = server_setup()
    db = args.db or dbtools.create_valar_database(prefix="vf_bench")
    if not db.startswith("vf_bench_"):
        raise SystemExit("--db must name a vf_bench_ database")
    try:
        if args.db:
            two, four = [1, 2], [1, 2, 3, 4]
            width = frames
        else:
            two, four, width = build(db, frames, wells)
        from valarfast import blobs
        from valarfast.connection import Valar

        kernels = blobs.backend_info()
        print(f"python {sys.version.split()[0]}, numpy {np.__version__}, kernels {kernels}")
        if kernels.get("backend") != "compiled":
            print("WARNING: no compiled kernels: valarfast figures are the numpy fallback's")
        with Valar(dbtools.config_for(db)) as valar:
            valar.open()
            conn = _plain_connection(db)
            check_same(db, two, width, conn)
            med2 = report("2 runs", db, two, width, conn, list(METHODS), args.reps)
            ratios(med2)
            width_options(two, args.reps, conn)
            scale = ["valarfast", "valarfast+frame", "valarfast out=", "valarpy-way",
                     "pymysql-floor", "pymysql-naive"]  # fmt: skip
            med4 = report("4 runs (scale)", db, four, width, conn, scale, args.reps)
            ratios(med4)
            conn.close()
        _, largest = blob_bytes(db, two)
        print("\n== peak RSS, one process per method (2 runs) ==")
        for method in METHODS:
            r = peak_rss(method, db, two, width)
            extra = r["peak"] - r["base"]
            budget = 1.1 * (r["result_bytes"] + largest)
            verdict = "within" if extra <= budget else "OVER"
            print(
                f"{method:16s} baseline {r['base'] / 2**20:7.1f} MiB  peak {r['peak'] / 2**20:7.1f}"
                f" MiB  +{extra / 2**20:7.1f} MiB  (result {r['result_bytes'] / 2**20:.1f} MiB; "
                f"{verdict} 1.1 x (result + largest blob) = {budget / 2**20:.1f} MiB)"
            )
    finally:
        if not args.keep and not args.db:
            dbtools.drop_database(db)
        elif not args.db:
            print(f"kept {db}")
        server_restore(pool)


if __name__ == "__main__":
    main()
