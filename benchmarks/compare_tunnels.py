"""Blob fetch throughput: direct vs valarfast's tunnels (sshtunnel, openssh) vs a hand-made ssh -L.

Starts a throwaway sshd on 127.0.0.1 (tests/sshd.py), makes a ``vf_bench_*`` database with
``--mb`` MB of incompressible 1 MB blobs on the test MariaDB, fetches them all through each route
(round-robin, ``--repeat`` times), and prints the median MB/s and ratios. Goal: the openssh back
end >= 0.9x the hand-made ``ssh -L``. Drops the database and stops everything at the end.

    python benchmarks/compare_tunnels.py --mb 50 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import dbtools
from sshd import SshServer, free_port

from valarfast.config import load_settings
from valarfast.tunnel import make_tunnel

BLOB = 1 << 20


def make_blob_database(mb: int) -> str:
    name = f"vf_bench_{secrets.token_hex(4)}"
    conn = dbtools.admin_connection()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
        cur.execute(f"CREATE TABLE `{name}`.blobs (id INT PRIMARY KEY, b LONGBLOB NOT NULL)")
        for i in range(mb):
            cur.execute(f"INSERT INTO `{name}`.blobs VALUES (%s, %s)", (i, os.urandom(BLOB)))
    conn.close()
    return name


def fetch_seconds(port: int, database: str) -> tuple[float, int]:
    s = dbtools.server_settings()
    conn = pymysql.connect(
        host="127.0.0.1", port=port, user=s["user"], password=s["password"], database=database
    )
    try:
        start = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute("SELECT b FROM blobs")
            total = sum(len(r[0]) for r in cur.fetchall())
        return time.perf_counter() - start, total
    finally:
        conn.close()


@contextmanager
def direct() -> Iterator[int]:
    yield int(dbtools.server_settings()["port"])


@contextmanager
def valarfast_tunnel(server: SshServer, backend: str) -> Iterator[int]:
    s = dbtools.server_settings()
    cfg = {"database": "x", "remote_bind_host": s["host"], "remote_bind_port": s["port"]}
    settings = load_settings({**cfg, **server.config(ssh_backend=backend)})
    assert settings.ssh is not None
    with make_tunnel(settings.ssh) as tunnel:
        assert tunnel.local_port is not None
        yield tunnel.local_port


@contextmanager
def hand_made(server: SshServer) -> Iterator[int]:
    s = dbtools.server_settings()
    port = free_port()
    cmd = [
        "ssh", "-N", "-L", f"127.0.0.1:{port}:{s['host']}:{s['port']}", "-p", str(server.port),
        "-i", str(server.client_key), "-o", f"UserKnownHostsFile={server.known_hosts}",
        "-o", "BatchMode=yes", "root@127.0.0.1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                pymysql.connect(host="127.0.0.1", port=port, user=s["user"],
                                password=s["password"]).close()  # fmt: skip
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=50, help="MB of blobs to fetch per run")
    ap.add_argument("--repeat", type=int, default=5, help="runs per route (median reported)")
    args = ap.parse_args()
    database = make_blob_database(args.mb)
    try:
        with SshServer.start(Path(tempfile.mkdtemp(prefix="vf_bench_sshd_"))) as server:
            routes: dict[str, Callable[[], AbstractContextManager[int]]] = {
                "direct": direct,
                "hand-made ssh -L": lambda: hand_made(server),
                "valarfast openssh": lambda: valarfast_tunnel(server, "openssh"),
                "valarfast sshtunnel": lambda: valarfast_tunnel(server, "sshtunnel"),
            }
            speeds: dict[str, list[float]] = {name: [] for name in routes}
            for _ in range(args.repeat):
                for name, route in routes.items():  # round-robin: noise hits every route alike
                    with route() as port:
                        fetch_seconds(port, database)  # warm-up (server cache, tunnel)
                        secs, total = fetch_seconds(port, database)
                    speeds[name].append(total / secs / 1e6)
    finally:
        dbtools.drop_database(database)
    med = {name: statistics.median(v) for name, v in speeds.items()}
    print(f"blob fetch, {args.mb} x 1 MB, median of {args.repeat} (MB/s; ratio to direct)")
    for name, v in med.items():
        print(f"  {name:<22} {v:8.1f} MB/s   {v / med['direct']:5.2f}x")
    ratio = med["valarfast openssh"] / med["hand-made ssh -L"]
    print(f"openssh back end / hand-made ssh -L: {ratio:.2f}x (goal >= 0.90)")
    fast = med["valarfast openssh"] / med["valarfast sshtunnel"]
    print(f"openssh / sshtunnel back end: {fast:.2f}x")


if __name__ == "__main__":
    main()
