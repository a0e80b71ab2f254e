"""asv benchmarks of valarfast.batch on a synthetic Valar in MariaDB (127.0.0.1:3306, root).

Each class builds its own ``vf_bench_*`` database in ``setup`` (valarfast.sandbox) and drops it
in ``teardown``; the data is small enough (2 runs x 96 wells x 20,000 frames, ~15 MB) to keep a
run short. The big comparison against the old ways is ``benchmarks/compare_batch.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

_TESTS = Path(__file__).resolve().parents[2] / "tests"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

FRAMES = 20_000


class _Sandbox:
    def setup(self, *args: Any) -> None:
        import dbtools

        from valarfast import sandbox
        from valarfast.connection import Valar

        self.db = dbtools.create_valar_database(prefix="vf_bench")
        self.valar = Valar(dbtools.config_for(self.db)).open()
        self.summary = sandbox.fill(
            runs=2, wells_per_run=96, frames=FRAMES, seed=1, features=("MI",), sensor_values=5000
        )
        self.runs = list(self.summary.run_ids)

    def teardown(self, *args: Any) -> None:
        import dbtools

        self.valar.close()
        dbtools.drop_database(self.db)


class WellFeatures(_Sandbox):
    """The whole path: metadata query, streamed blobs, kernel decode into one matrix."""

    def time_well_features(self) -> None:
        from valarfast import batch

        batch.well_features(runs=self.runs, feature="MI")

    def time_well_features_into_out(self) -> None:
        from valarfast import batch

        if not hasattr(self, "out"):
            self.out = np.empty(batch.well_features_shape(runs=self.runs, feature="MI"), "f4")
        batch.well_features(runs=self.runs, feature="MI", out=self.out)

    def time_plan_only(self) -> None:
        from valarfast import batch

        batch.plan_well_features(runs=self.runs, feature="MI")

    def time_plan_only_unsized(self) -> None:
        from valarfast import batch

        batch.plan_well_features(runs=self.runs, feature="MI", sized=False)

    def time_to_frame(self) -> None:
        from valarfast import batch

        batch.well_features(runs=self.runs, feature="MI").to_frame()

    def peakmem_well_features(self) -> None:
        from valarfast import batch

        batch.well_features(runs=self.runs, feature="MI")


class StimulusAndSensors(_Sandbox):
    def time_stimulus_frames(self) -> None:
        from valarfast import batch

        batch.stimulus_frames(self.summary.battery_id)

    def time_sensor_data(self) -> None:
        from valarfast import batch

        batch.sensor_data(self.runs, "sandbox_microphone")
