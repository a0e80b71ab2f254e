"""The cache through both SSH tunnel back ends: the same entries as a direct connection.

The namespace is the server's ``@@hostname``/``@@port`` and the database, not the address the
client dialled, so a fetch through a tunnel (another local port) hits what a direct fetch
stored, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dbtools
import numpy as np
import pytest
from sshd import SshServer, no_leaks_fixture, sshd_server_fixture  # noqa: F401

import valarfast
from valarfast import batch
from valarfast.cache import BlobCache, make_keys, namespace_for

pytestmark = [pytest.mark.mariadb, pytest.mark.sshd, pytest.mark.usefixtures("no_leaks")]


@pytest.fixture(scope="module")
def filled(mariadb: dict[str, Any]) -> Iterator[dict[str, Any]]:
    fill = {"runs": 2, "wells_per_run": 6, "frames": 5_000, "seed": 9, "features": ("MI",)}
    with dbtools.sandbox_database(**fill) as (_, config, box):
        yield {"config": config, "runs": list(box.run_ids)}


def _through(config: dict[str, Any], server: SshServer, backend: str) -> dict[str, Any]:
    """The same database reached through the test sshd (the remote end: MariaDB's port)."""
    direct = {k: v for k, v in config.items() if k not in ("host", "port")}
    return {
        **direct,
        "remote_bind_host": config["host"],
        "remote_bind_port": config["port"],
        **server.config(ssh_backend=backend),
    }


def _bits(m: Any) -> np.ndarray:
    return np.asarray(m.values).view(np.uint32)


@pytest.mark.parametrize("backend", ["sshtunnel", "openssh"])
def test_tunnel_hits_the_direct_entries(
    filled: dict[str, Any], sshd_server: SshServer, backend: str, tmp_path: Path
) -> None:
    runs = filled["runs"]
    with valarfast.opened(filled["config"]) as model:
        plain = batch.well_features(runs=runs, feature="MI", cache=False)
        batch.well_features(runs=runs, feature="MI", cache=tmp_path)
        direct_ns = namespace_for(model.conn.database)
        plan = batch.plan_well_features(runs=runs, feature="MI")
    stored = set(tmp_path.rglob("*.vfc"))
    assert len(stored) == int((plain.lengths > 0).sum())
    # mark one entry (same key, other values): a fetch that shows the mark read that entry
    i = int(plan.present[1])
    key = make_keys("well_features", plan.ids, plan.sha1s, "float")[i]
    assert key is not None
    cache = BlobCache(tmp_path).with_namespace(direct_ns)
    cache.write(key, np.full(int(plan.lengths[i]), -7.0, np.float32))
    with valarfast.opened(_through(filled["config"], sshd_server, backend)) as model:
        tunnel = model.conn.tunnel
        assert tunnel is not None and tunnel.local_port != filled["config"]["port"]
        assert namespace_for(model.conn.database) == direct_ns
        warm = batch.well_features(runs=runs, feature="MI", cache=tmp_path)
        through_plain = batch.well_features(runs=runs, feature="MI", cache=False)
    assert set(tmp_path.rglob("*.vfc")) == stored  # nothing new stored: all hits
    assert (warm.values[i, : plan.lengths[i]] == -7.0).all()
    others = np.arange(len(plan.ids)) != i
    assert np.array_equal(_bits(warm)[others], _bits(plain)[others])
    assert np.array_equal(_bits(through_plain), _bits(plain))
    assert np.array_equal(warm.well_ids, plain.well_ids)
    assert np.array_equal(warm.lengths, plain.lengths)
