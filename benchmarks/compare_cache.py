"""Cold vs warm batch fetches with the local blob cache, directly and through rate-limited links.

    python benchmarks/compare_cache.py                    # full: needs MariaDB and valarfast.batch
    python benchmarks/compare_cache.py --storage-only     # the cache's storage layer alone

Full mode builds the batch benchmark data set (2 runs x 96 wells x 150,000 frames of "MI",
about 115 MB of blobs) in a throwaway database ``vf_bench_*`` (dropped at the end), then times
``batch.well_features`` in one process: uncached, cold (empty cache: fetch + store) and warm
(every row from the cache), on loopback and through a TCP proxy that paces the bytes to
1 Gbit/s and 100 Mbit/s (a child process on 127.0.0.1, so its work does not share our GIL).
It also times the hash round trip alone (the metadata query a warm fetch makes) and reading the
same rows from local files with numpy (``np.fromfile`` per well + ``np.stack``).
Medians of ``--repeats`` runs (the 100 Mbit/s cold/uncached fetches: ``--slow-repeats``).
"cold" is a first fetch with the cache on: every row fetched and stored (written while the rest
streams). Before each cold run the cache is emptied and ``os.sync()`` called; before the warm
runs too (a re-run comes later), outside the timings. The proxy's own CPU (a Python pump)
competes with the client on this 2-core machine, so the 1 Gbit/s cold figures are pessimistic.

Goals (issue 7): warm >= 5x cold on loopback and >= 25x at 1 Gbit/s; warm within 1.5x of
numpy reading local files; hash round trip < 5% of a cold fetch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from valarfast.cache import BlobCache, CacheKey, cache_for_database  # noqa: E402

LINKS = {"loopback": None, "1 Gbit/s": 1e9 / 8, "100 Mbit/s": 100e6 / 8}


# ---------------------------------------------------------------------- the rate-limited proxy
def _pump(src: socket.socket, dst: socket.socket, rate: float) -> None:
    """Copy src -> dst, sending no faster than ``rate`` bytes/s (a paced schedule, 64 KB chunks)."""
    buf = bytearray(64 * 1024)
    view = memoryview(buf)
    start = time.perf_counter()
    sent = 0
    try:
        while True:
            n = src.recv_into(buf)
            if n == 0:
                break
            sent += n
            delay = start + sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.05:  # idle gap: do not bank credit for a later burst
                start, sent = time.perf_counter(), 0
            dst.sendall(view[:n])
    except OSError:
        pass
    finally:
        for s in (dst, src):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def serve_proxy(target_port: int, rate: float) -> None:
    """Listen on 127.0.0.1 (a free port, printed), forward to 127.0.0.1:target_port, paced."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", target_port))
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_pump, args=(client, server, rate), daemon=True).start()
        threading.Thread(target=_pump, args=(server, client, rate), daemon=True).start()


@contextlib.contextmanager
def proxy(target_port: int, rate: float | None) -> Iterator[int]:
    """The port to connect to: the server itself, or a paced proxy in a child process."""
    if rate is None:
        yield target_port
        return
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-proxy", str(target_port), str(rate)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        yield int(child.stdout.readline())
    finally:
        child.terminate()
        child.wait()


# ---------------------------------------------------------------------- timing
def median_time(
    fn: Callable[[], Any], repeats: int, before: Callable[[], Any] | None = None
) -> float:
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def numpy_files_baseline(
    matrix: np.ndarray, lengths: np.ndarray, repeats: int
) -> tuple[float, float]:
    """Seconds to read the same rows from local files: np.fromfile + np.stack; and readinto rows."""
    folder = Path(tempfile.mkdtemp(prefix="vf_bench_np_"))
    try:
        paths = []
        for i, n in enumerate(lengths):
            path = folder / f"{i}.f32"
            matrix[i, :n].tofile(path)
            paths.append(path)
        width = matrix.shape[1]

        def fromfile_stack() -> np.ndarray:
            rows = [np.fromfile(p, dtype=matrix.dtype) for p in paths]
            out = np.full((len(rows), width), np.nan, dtype=matrix.dtype)
            for i, r in enumerate(rows):
                out[i, : r.shape[0]] = r
            return out

        def readinto_rows() -> np.ndarray:
            out = np.full((len(paths), width), np.nan, dtype=matrix.dtype)
            for i, p in enumerate(paths):
                with open(p, "rb", buffering=0) as f:
                    f.readinto(memoryview(out[i]).cast("B"))  # type: ignore[arg-type]
            return out

        assert np.array_equal(fromfile_stack().view(np.uint32), matrix.view(np.uint32))
        return median_time(fromfile_stack, repeats), median_time(readinto_rows, repeats)
    finally:
        shutil.rmtree(folder)


# ---------------------------------------------------------------------- storage-only mode
def storage_only(rows: int, width: int, repeats: int) -> None:
    print(f"storage layer alone: {rows} rows x {width} float32 ({rows * width * 4 / 1e6:.1f} MB)")
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((rows, width)).astype(np.float32)
    lengths = np.full(rows, width)
    keys = [CacheKey("well_features", i + 1, rng.bytes(40), "float") for i in range(rows)]
    folder = tempfile.mkdtemp(prefix="vf_bench_cache_")
    try:
        cache = BlobCache(folder)
        store = median_time(lambda: cache.store_rows(keys, matrix, lengths), repeats)
        out = np.empty_like(matrix)
        warm = median_time(lambda: cache.fill_from_cache(keys, out, lengths=lengths), repeats)
        assert np.array_equal(out.view(np.uint32), matrix.view(np.uint32))
        fromfile, readinto = numpy_files_baseline(matrix, lengths, repeats)
    finally:
        shutil.rmtree(folder)
    mb = matrix.nbytes / 1e6
    print(f"  store (write all rows)          {store * 1e3:8.1f} ms  {mb / store:8.0f} MB/s")
    print(f"  warm cache read (crc checked)   {warm * 1e3:8.1f} ms  {mb / warm:8.0f} MB/s")
    print(f"  numpy np.fromfile + matrix      {fromfile * 1e3:8.1f} ms  {mb / fromfile:8.0f} MB/s")
    print(f"  raw readinto rows (no checks)   {readinto * 1e3:8.1f} ms  {mb / readinto:8.0f} MB/s")
    print(f"  warm / numpy fromfile = {warm / fromfile:.2f}x (goal <= 1.5x)")
    print(f"  warm / raw readinto   = {warm / readinto:.2f}x")


# ---------------------------------------------------------------------- full mode
def full(args: argparse.Namespace) -> None:
    import dbtools

    from valarfast import batch, sandbox
    from valarfast.connection import Valar

    name = dbtools.create_valar_database(prefix="vf_bench")
    cache_dir = Path(tempfile.mkdtemp(prefix="vf_bench_cache_"))
    try:
        config = dbtools.config_for(name)
        t0 = time.perf_counter()
        with Valar(config) as v:
            box = sandbox.fill(
                v.database, runs=args.runs, wells_per_run=args.wells, frames=args.frames,
                features=("MI",), seed=7, ragged=5,
            )  # fmt: skip
        runs = list(box.run_ids)
        print(
            f"data set: {len(runs)} runs x {args.wells} wells x {args.frames:,} frames, "
            f"{box.blob_bytes / 1e6:.1f} MB of blobs (built in {time.perf_counter() - t0:.1f} s)"
        )
        reference = None
        rows = []
        for link, rate in LINKS.items():
            if link not in args.links:
                continue
            slow = rate is not None and rate < 50e6
            rep = args.slow_repeats if slow else args.repeats
            with proxy(int(config["port"]), rate) as port, Valar({**config, "port": port}) as v:
                cache = BlobCache(cache_dir)

                def fetch(c: Any) -> Any:
                    return batch.well_features(runs=runs, feature="MI", cache=c)

                def cold_fetch(cache: BlobCache = cache) -> Any:
                    return fetch(cache)

                uncached = median_time(lambda: fetch(False), rep)

                def empty_cache(cache: BlobCache = cache) -> None:
                    cache.clear()
                    os.sync()  # no writeback of the previous repetition still pending

                cold = median_time(cold_fetch, rep, before=empty_cache)
                cold_fetch()
                os.sync()  # a re-run comes later: let the kernel finish writing the new entries
                warm = median_time(cold_fetch, args.repeats)
                rep_n = args.repeats
                lookup = cache_for_database(cache, v.database).length_lookup(  # type: ignore[union-attr]
                    "well_features", "float", np.float32
                )
                hashes = median_time(partial(_metadata_round_trip, batch, runs, lookup), rep_n)
                with_length = median_time(partial(_metadata_round_trip, batch, runs), rep_n)
                plan = _metadata_round_trip(batch, runs, lookup)
                pairs = [(int(i), d) for i, d in zip(plan.ids, plan.sha1s, strict=True) if i >= 0]
                headers = median_time(partial(_header_checks, lookup, pairs), rep_n)
                got = cold_fetch()
                plain = fetch(False)
                exact = np.array_equal(got.values.view(np.uint32), plain.values.view(np.uint32))
                if reference is None:
                    reference = plain
                exact = exact and np.array_equal(
                    plain.values.view(np.uint32), reference.values.view(np.uint32)
                )
                rows.append((link, uncached, cold, warm, hashes, with_length, headers, exact))
        assert reference is not None
        fromfile, readinto = numpy_files_baseline(
            reference.values, np.asarray(reference.lengths), args.repeats
        )
        mb = reference.values.nbytes / 1e6
        print(f"\nmedian seconds ({args.repeats} repeats; cold/uncached at 100 Mbit/s: "
              f"{args.slow_repeats}); matrix {mb:.1f} MB")  # fmt: skip
        print(f"{'link':<12}{'uncached':>10}{'cold':>10}{'warm':>10}{'cold/warm':>11}"
              f"{'hash rt':>10}{'rt/cold':>9}{'LENGTH rt':>11}  bit-exact")  # fmt: skip
        for link, uncached, cold, warm, hashes, with_length, _, exact in rows:
            print(f"{link:<12}{uncached:>10.3f}{cold:>10.3f}{warm:>10.3f}{cold / warm:>10.1f}x"
                  f"{hashes:>10.4f}{hashes / cold:>8.1%}{with_length:>11.4f}  {exact}")  # fmt: skip
        print("hash rt = the warm fetch's metadata step: run/feature lookups, the hash query "
              "(no LENGTH()) and the cache's header checks, of which the header checks alone: "
              + ", ".join(f"{r[0]} {r[6] * 1e3:.1f} ms" for r in rows))  # fmt: skip
        print(f"numpy np.fromfile + matrix from local files: {fromfile:.3f} s; "
              f"raw readinto rows: {readinto:.3f} s")  # fmt: skip
        warm_loop = next((r[3] for r in rows if r[0] == "loopback"), None)
        if warm_loop is not None:
            print(f"warm (loopback) / numpy fromfile = {warm_loop / fromfile:.2f}x (goal <= 1.5x)")
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
        dbtools.drop_database(name)


def _header_checks(lookup: Any, pairs: list[tuple[int, bytes | None]]) -> list[Any]:
    """The cache's part of the hash round trip alone: one header read per row."""
    return [lookup(i, d) for i, d in pairs]


def _metadata_round_trip(batch: Any, runs: list[int], lookup: Any = None) -> Any:
    """The hash round trip alone: batch's metadata query; with the cache's lengths (a warm
    fetch: no ``LENGTH()``, which makes MariaDB read every blob) or without (``LENGTH()``)."""
    return batch.plan_well_features(runs=runs, feature="MI", known_bytes=lookup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--serve-proxy", nargs=2, metavar=("TARGET_PORT", "RATE"), help=argparse.SUPPRESS
    )
    parser.add_argument("--storage-only", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slow-repeats", type=int, default=1)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--wells", type=int, default=96)
    parser.add_argument("--frames", type=int, default=150_000)
    parser.add_argument(
        "--links", default=",".join(LINKS), help="comma-separated subset of " + ", ".join(LINKS)
    )
    args = parser.parse_args()
    if args.serve_proxy:
        serve_proxy(int(args.serve_proxy[0]), float(args.serve_proxy[1]))
        return
    args.links = [s.strip() for s in args.links.split(",")]
    if args.storage_only:
        storage_only(args.runs * args.wells, args.frames, args.repeats)
        return
    try:
        import valarfast.batch  # noqa: F401
    except ImportError:
        print("valarfast.batch is not there yet: measuring the storage layer alone\n")
        storage_only(args.runs * args.wells, args.frames, args.repeats)
        return
    full(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
