"""A deterministic synthetic Valar: fills a database that has Valar's schema with a realistic chain.

users -> suppliers -> plate types -> plates -> project types -> projects -> batteries ->
experiments -> saurons -> sauron configs -> assays -> stimuli -> stimulus frames ->
assay positions -> runs -> wells -> features -> well features -> sensors -> sensor data.

Everything is derived from ``seed``: the same arguments give the same rows, bytes and ids (ids
are assigned here, after the largest id already in each table, so a second fill adds to the
first). Blobs use Valar's encodings (see ``api.md`` section 6): well features are big-endian
float32 with ragged lengths, NaN and negative values, and ``well_features.sha1`` holds the
40-character hex SHA-1 of the blob; stimulus frames are JVM signed bytes (value - 128) with a
20-byte SHA-1; sensor data is typed by ``sensors.data_type``.

Rows go in with multi-row ``INSERT`` statements with explicit column lists, parameterized, in
chunks that stay below the server's ``max_allowed_packet`` (read from the server on MySQL), all
in one transaction, with writing enabled only for this block (``guard.writes_enabled()``).
Works on any bound peewee database (MySQL/MariaDB; SQLite once its schema exists).

>>> from valarfast import sandbox
>>> summary = sandbox.fill(runs=2, wells_per_run=12, frames=500, seed=1)  # doctest: +SKIP
>>> summary.run_ids  # doctest: +SKIP
(1, 2)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

# (name, data_type, blob_type, n_between, length factor) of the synthetic sensors
SENSORS: tuple[tuple[str, str, str, int | None], ...] = (
    ("sandbox_photosensor", "unsigned_byte", "every_n_milliseconds", 10),
    ("sandbox_thermosensor", "float", "every_n_milliseconds", 1000),
    ("sandbox_microphone", "short", "every_n_milliseconds", 1),
    ("sandbox_stimulus_millis", "long", "arbitrary", None),
    ("sandbox_camera_millis", "unsigned_int", "every_n_frames", 1),
    ("sandbox_preview", "unsigned_short", "arbitrary", None),
    ("sandbox_humidity", "double", "every_n_milliseconds", 1000),
    ("sandbox_sauronx_version", "utf8_char", "arbitrary", None),
)

# (name, description, dimensions) of the features the sandbox knows
FEATURES: Mapping[str, tuple[str, str]] = {
    "MI": ("motion index: summed pixel change per frame", "[t-1]"),
    "cd(10)": ("count of pixels changed by more than 10 grey levels", "[t-1]"),
    "MI-raw": ("motion index before smoothing", "[t-1]"),
}

STIMULI: tuple[tuple[str, str, bool, int | None], ...] = (
    ("sandbox blue LED", "0000ff", False, 470),
    ("sandbox red LED", "ff0000", False, 630),
    ("sandbox solenoid", "888888", True, None),
)

_DEFAULT_PACKET = 16 * 1024 * 1024
_MAX_ROWS_PER_INSERT = 500
_EPOCH = datetime(2021, 3, 1, 9, 0, 0)
#: a plate is 8 x 12; the sandbox makes each column a dose (MI rises from column 1 to 12)
PLATE_COLUMNS = 12
#: stimuli per run, each starting a burst of motion in the sandbox's MI
STIMULUS_BURSTS = 6


@dataclass(frozen=True)
class Sandbox:
    """What :func:`fill` wrote: ids in insertion order, and counts."""

    seed: int
    run_ids: tuple[int, ...]
    well_ids: Mapping[int, tuple[int, ...]]  # run id -> well ids ordered by well_index
    feature_ids: Mapping[str, int]
    battery_id: int
    assay_ids: tuple[int, ...]
    stimulus_ids: tuple[int, ...]
    sensor_ids: Mapping[str, int]
    missing_wells: tuple[int, ...]  # well ids that have no well_features row
    featureless_runs: tuple[int, ...]
    n_well_features: int
    blob_bytes: int
    extras: Mapping[str, Any] = field(default_factory=dict)


def fill(
    db: Any = None,
    *,
    runs: int = 2,
    wells_per_run: int = 96,
    frames: int = 1000,
    seed: int = 0,
    features: Sequence[str] = ("MI", "cd(10)"),
    ragged: int = 5,
    missing_wells: int = 0,
    featureless_runs: int = 0,
    assays: int = 3,
    assay_frames: int = 400,
    sensor_values: int = 200,
) -> Sandbox:
    """Fill ``db`` (default: the open connection's database) with a synthetic chain.

    ``frames`` is the longest well-feature row; each well drops up to ``ragged`` frames at the end.
    ``missing_wells`` wells per run (picked by the seed) get no well features; the last
    ``featureless_runs`` runs get wells but no well features at all.

    >>> fill(runs=1, wells_per_run=6, frames=100, seed=3).n_well_features  # doctest: +SKIP
    12
    """
    _check_args(runs, wells_per_run, frames, ragged, missing_wells, featureless_runs, features)
    from . import guard

    db = _database(db)
    writer = _Writer(db)
    with guard.writes_enabled(), db.atomic():
        return _Builder(writer, np.random.default_rng(seed), seed).build(
            runs=runs,
            wells_per_run=wells_per_run,
            frames=frames,
            features=tuple(features),
            ragged=ragged,
            missing_wells=missing_wells,
            featureless_runs=featureless_runs,
            assays=assays,
            assay_frames=assay_frames,
            sensor_values=sensor_values,
        )


def _check_args(
    runs: int,
    wells_per_run: int,
    frames: int,
    ragged: int,
    missing_wells: int,
    featureless_runs: int,
    features: Sequence[str],
) -> None:
    checks = (
        (runs >= 1, f"runs must be >= 1, not {runs}"),
        (1 <= wells_per_run <= 1536, f"wells_per_run must be in 1..1536, not {wells_per_run}"),
        (frames >= 1, f"frames must be >= 1, not {frames}"),
        (0 <= ragged < frames, f"ragged must be in 0..frames-1, not {ragged}"),
        (0 <= missing_wells <= wells_per_run, f"missing_wells must be in 0..{wells_per_run}"),
        (0 <= featureless_runs <= runs, f"featureless_runs must be in 0..{runs}"),
        (not isinstance(features, str), "features must be a sequence of names, not a str"),
    )
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(f"unknown sandbox feature(s) {unknown}; known: {sorted(FEATURES)}")


def _database(db: Any) -> Any:
    if db is not None:
        return db
    from . import metamodel

    proxy = metamodel.database_proxy
    if getattr(proxy, "obj", None) is None:
        from .errors import NotConnectedError

        raise NotConnectedError(
            "no open connection: open one with valarfast.opened() or Valar(config).open()"
        )
    return proxy.obj


def encode_floats(values: np.ndarray) -> bytes:
    """Valar's ``well_features.floats`` bytes for float32 values (big-endian binary32).

    >>> encode_floats(np.array([1.0, -2.0], np.float32))
    b'?\\x80\\x00\\x00\\xc0\\x00\\x00\\x00'
    """
    return np.ascontiguousarray(values, dtype=">f4").tobytes()


def encode_frames(values: np.ndarray) -> bytes:
    """Valar's stimulus-frame bytes for uint8 values 0..255 (JVM signed bytes, value - 128).

    >>> encode_frames(np.array([0, 128, 255], np.uint8))
    b'\\x80\\x00\\x7f'
    """
    return (np.asarray(values, dtype=np.uint8) ^ np.uint8(0x80)).tobytes()


def encode_sensor(values: Any, data_type: str) -> bytes:
    """Valar's ``sensor_data.floats`` bytes for values of a sensor's ``data_type``.

    >>> encode_sensor(np.array([0, 65535], np.uint16), "unsigned_short")
    b'\\x80\\x00\\x7f\\xff'
    """
    if data_type == "utf8_char":
        return str(values).encode("utf-8")
    if data_type not in _SENSOR_CODECS:
        raise ValueError(f"the sandbox cannot encode sensor data_type {data_type!r}")
    native, stored, offset = _SENSOR_CODECS[data_type]
    arr = np.asarray(values, dtype=native)
    if offset:  # unsigned stored as signed: flip the top bit (the same as value - 2^(bits-1))
        arr = arr ^ np.array(offset, dtype=native)
        return arr.astype(arr.dtype.newbyteorder(">")).view(stored).tobytes()
    return arr.astype(stored).tobytes()


# data_type -> (native dtype, stored big-endian dtype, top bit to flip for unsigned ints)
_SENSOR_CODECS: Mapping[str, tuple[str, str, int]] = {
    "byte": ("i1", ">i1", 0),
    "short": ("i2", ">i2", 0),
    "int": ("i4", ">i4", 0),
    "long": ("i8", ">i8", 0),
    "float": ("f4", ">f4", 0),
    "double": ("f8", ">f8", 0),
    "unsigned_byte": ("u1", ">i1", 1 << 7),
    "unsigned_short": ("u2", ">i2", 1 << 15),
    "unsigned_int": ("u4", ">i4", 1 << 31),
    "unsigned_long": ("u8", ">i8", 1 << 63),
}


class _Writer:
    """Multi-row parameterized INSERTs with explicit ids, chunked under the packet limit."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.param = getattr(db, "param", "%s")
        self.budget = self._packet_budget()

    def _packet_budget(self) -> int:
        packet = _DEFAULT_PACKET
        if type(self.db).__name__.lower().find("sqlite") < 0:
            try:
                cursor = self.db.execute_sql("SELECT @@max_allowed_packet")
                packet = int(cursor.fetchone()[0])
            except Exception:  # not MySQL-like: keep the default
                packet = _DEFAULT_PACKET
        # escaping can double a blob's bytes; keep a margin for the statement text
        return max(64 * 1024, packet // 3 - 64 * 1024)

    def next_id(self, table: str) -> int:
        cursor = self.db.execute_sql(f"SELECT COALESCE(MAX(id), 0) FROM {table}")
        return int(cursor.fetchone()[0]) + 1

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """Insert rows (tuples in ``columns`` order); return how many."""
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        one = "(" + ", ".join([self.param] * len(columns)) + ")"
        chunk: list[Sequence[Any]] = []
        size = n = 0
        for row in rows:
            row_size = sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in row)
            if chunk and (size + row_size > self.budget or len(chunk) >= _MAX_ROWS_PER_INSERT):
                self._run(head, one, chunk)
                chunk, size = [], 0
            chunk.append(row)
            size += row_size
            n += 1
        if chunk:
            self._run(head, one, chunk)
        return n

    def _run(self, head: str, one: str, chunk: list[Sequence[Any]]) -> None:
        params = [v for row in chunk for v in row]
        self.db.execute_sql(head + ", ".join([one] * len(chunk)), params)


class _Builder:
    def __init__(self, writer: _Writer, rng: np.random.Generator, seed: int) -> None:
        self.w = writer
        self.rng = rng
        self.seed = seed

    def _ids(self, table: str, n: int) -> list[int]:
        first = self.w.next_id(table)
        return list(range(first, first + n))

    def _named(self, table: str, column: str, names: Sequence[str]) -> dict[str, int]:
        """Ids of the rows of ``table`` already named ``names`` (unique column)."""
        found: dict[str, int] = {}
        marks = ", ".join([self.w.param] * len(names))
        cursor = self.w.db.execute_sql(
            f"SELECT {column}, id FROM {table} WHERE {column} IN ({marks})", list(names)
        )
        for name, id_ in cursor.fetchall():
            found[name] = int(id_)
        return found

    def build(self, **kw: Any) -> Sandbox:
        tag = f"s{self.seed}"
        (user,) = self._ids("users", 1)
        self.w.insert(
            "users",
            ("id", "username", "first_name", "last_name", "write_access"),
            [(user, f"sandbox{user}", "Sandy", f"Box {tag}", 1)],
        )
        (supplier,) = self._ids("suppliers", 1)
        self.w.insert(
            "suppliers", ("id", "name", "description"), [(supplier, f"sandbox-{supplier}", tag)]
        )
        (plate_type,) = self._ids("plate_types", 1)
        self.w.insert(
            "plate_types",
            ("id", "name", "supplier_id", "part_number", "n_rows", "n_columns", "well_shape",
             "opacity"),
            [(plate_type, f"sandbox {plate_type}", supplier, f"SB-{plate_type}", 8, 12, "round",
              "opaque")],
        )  # fmt: skip
        (project_type,) = self._ids("project_types", 1)
        self.w.insert(
            "project_types",
            ("id", "name", "description"),
            [(project_type, f"sandbox-{project_type}", "synthetic")],
        )
        (project,) = self._ids("projects", 1)
        self.w.insert(
            "projects",
            ("id", "name", "type_id", "creator_id", "description", "active"),
            [(project, f"sandbox project {project}", project_type, user, tag, 1)],
        )
        battery, assay_ids, stimulus_ids = self._battery(user, kw["assays"], kw["assay_frames"])
        (experiment,) = self._ids("experiments", 1)
        self.w.insert(
            "experiments",
            ("id", "name", "description", "creator_id", "project_id", "battery_id",
             "default_acclimation_sec", "active"),
            [(experiment, f"sandbox experiment {experiment}", tag, user, project, battery, 600, 1)],
        )  # fmt: skip
        (sauron,) = self._ids("saurons", 1)
        self.w.insert("saurons", ("id", "name", "active"), [(sauron, f"sb{sauron}", 1)])
        (config,) = self._ids("sauron_configs", 1)
        self.w.insert(
            "sauron_configs",
            ("id", "sauron_id", "datetime_changed", "description"),
            [(config, sauron, _when(0), "synthetic")],
        )
        n_runs = kw["runs"]
        plates = self._ids("plates", n_runs)
        self.w.insert(
            "plates",
            ("id", "plate_type_id", "person_plated_id", "datetime_plated"),
            [(p, plate_type, user, _when(i)) for i, p in enumerate(plates)],
        )
        run_ids = self._ids("runs", n_runs)
        self.w.insert(
            "runs",
            ("id", "experiment_id", "plate_id", "description", "experimentalist_id",
             "datetime_run", "name", "tag", "sauron_config_id", "acclimation_sec"),
            [(r, experiment, plates[i], f"sandbox run {i} of seed {self.seed}", user,
              _when(i, 1), f"sandbox-run-{r}", f"sandbox-{tag}-{r}", config, 600)
             for i, r in enumerate(run_ids)],
        )  # fmt: skip
        wells = self._wells(run_ids, kw["wells_per_run"])
        feature_ids = self._features(kw["features"])
        missing, n_wf, blob_bytes = self._well_features(wells, feature_ids, run_ids, kw)
        sensor_ids = self._sensors()
        blob_bytes += self._sensor_data(run_ids, sensor_ids, kw["sensor_values"])
        return Sandbox(
            seed=self.seed,
            run_ids=tuple(run_ids),
            well_ids={r: tuple(ws) for r, ws in wells.items()},
            feature_ids=feature_ids,
            battery_id=battery,
            assay_ids=tuple(assay_ids),
            stimulus_ids=tuple(stimulus_ids),
            sensor_ids=sensor_ids,
            missing_wells=tuple(missing),
            featureless_runs=tuple(run_ids[n_runs - kw["featureless_runs"] :]),
            n_well_features=n_wf,
            blob_bytes=blob_bytes,
            extras={"user_id": user, "experiment_id": experiment, "project_id": project},
        )

    def _battery(self, user: int, n_assays: int, assay_frames: int) -> tuple[int, list, list]:
        stim_names = [s[0] for s in STIMULI]
        known = self._named("stimuli", "name", stim_names)
        new = [s for s in STIMULI if s[0] not in known]
        new_ids = self._ids("stimuli", len(new))
        self.w.insert(
            "stimuli",
            ("id", "name", "default_color", "description", "analog", "wavelength_nm"),
            [
                (i, s[0], s[1], "synthetic", int(s[2]), s[3])
                for i, s in zip(new_ids, new, strict=True)
            ],
        )
        known.update({s[0]: i for i, s in zip(new_ids, new, strict=True)})
        stimulus_ids = [known[n] for n in stim_names]
        assay_ids = self._ids("assays", n_assays)
        frames_by_assay: dict[int, list[tuple[int, bytes]]] = {}
        assay_rows = []
        for a in assay_ids:
            length = int(assay_frames + self.rng.integers(0, max(1, assay_frames // 4)))
            blobs = []
            for k, s in enumerate(stimulus_ids):
                values = self._stimulus_values(length, analog=STIMULI[k][2])
                blobs.append((s, encode_frames(values)))
            frames_by_assay[a] = blobs
            digest = hashlib.sha1(b"".join(b for _, b in blobs)).digest()
            assay_rows.append((a, f"sandbox assay {a}", "synthetic", length, digest))
        self.w.insert("assays", ("id", "name", "description", "length", "frames_sha1"), assay_rows)
        sf_ids = iter(self._ids("stimulus_frames", n_assays * len(stimulus_ids)))
        self.w.insert(
            "stimulus_frames",
            ("id", "assay_id", "stimulus_id", "frames", "frames_sha1"),
            [(next(sf_ids), a, s, b, hashlib.sha1(b).digest())
             for a in assay_ids for s, b in frames_by_assay[a]],
        )  # fmt: skip
        starts, start = [], 0
        for row in assay_rows:
            starts.append(start)
            start += row[3]
        (battery,) = self._ids("batteries", 1)
        self.w.insert(
            "batteries",
            ("id", "name", "description", "length", "author_id", "hidden", "assays_sha1"),
            [(battery, f"sandbox battery {battery}", "synthetic", start, user, 0,
              hashlib.sha1(repr(assay_ids).encode()).digest())],
        )  # fmt: skip
        position_ids = self._ids("assay_positions", n_assays)
        self.w.insert(
            "assay_positions",
            ("id", "battery_id", "assay_id", "start"),
            [(p, battery, a, s) for p, a, s in zip(position_ids, assay_ids, starts, strict=True)],
        )
        return battery, assay_ids, stimulus_ids

    def _stimulus_values(self, length: int, *, analog: bool) -> np.ndarray:
        values = np.zeros(length, dtype=np.uint8)
        n_pulses = int(self.rng.integers(1, 5))
        for _ in range(n_pulses):
            start = int(self.rng.integers(0, length))
            stop = min(length, start + int(self.rng.integers(1, max(2, length // 5))))
            level = 255 if not analog else int(self.rng.integers(1, 256))
            values[start:stop] = level
        return values

    def _wells(self, run_ids: Sequence[int], per_run: int) -> dict[int, list[int]]:
        ids = iter(self._ids("wells", len(run_ids) * per_run))
        wells: dict[int, list[int]] = {r: [] for r in run_ids}
        rows = []
        for r in run_ids:
            for index in range(1, per_run + 1):
                w = next(ids)
                wells[r].append(w)
                rows.append((w, r, index, f"group {1 + (index - 1) // 12}", 8))
        self.w.insert("wells", ("id", "run_id", "well_index", "well_group", "n"), rows)
        return wells

    def _features(self, names: Sequence[str]) -> dict[str, int]:
        wanted = list(FEATURES)
        known = self._named("features", "name", wanted)
        new = [n for n in wanted if n not in known]
        new_ids = self._ids("features", len(new))
        self.w.insert(
            "features",
            ("id", "name", "description", "dimensions", "data_type"),
            [
                (i, n, FEATURES[n][0], FEATURES[n][1], "float")
                for i, n in zip(new_ids, new, strict=True)
            ],
        )
        known.update(zip(new, new_ids, strict=True))
        return {n: known[n] for n in names}

    def _well_features(
        self, wells: Mapping[int, list[int]], feature_ids: Mapping[str, int], run_ids: list, kw: Any
    ) -> tuple[list[int], int, int]:
        frames, ragged = kw["frames"], kw["ragged"]
        with_features = run_ids[: len(run_ids) - kw["featureless_runs"]]
        missing: list[int] = []
        plan: list[tuple[int, int, int]] = []  # (well id, feature id, length)
        column: dict[int, int] = {}  # well id -> plate column (its dose)
        for r in with_features:
            skip = set(self.rng.choice(len(wells[r]), size=kw["missing_wells"], replace=False))
            for i, w in enumerate(wells[r]):
                if i in skip:
                    missing.append(w)
                    continue
                length = frames - int(self.rng.integers(0, ragged + 1))
                plan.extend((w, f, length) for f in feature_ids.values())
                column[w] = i % PLATE_COLUMNS
        ids = iter(self._ids("well_features", len(plan)))
        total = 0

        def rows() -> Iterable[tuple[int, int, int, bytes, bytes]]:
            nonlocal total
            for w, f, length in plan:
                blob = encode_floats(self._feature_values(length, column[w]))
                total += len(blob)
                sha1 = hashlib.sha1(blob).hexdigest().encode("ascii")
                yield (next(ids), w, f, blob, sha1)

        n = self.w.insert("well_features", ("id", "well_id", "type_id", "floats", "sha1"), rows())
        return sorted(missing), n, total

    def _feature_values(self, length: int, column: int) -> np.ndarray:
        """Motion-like values: mostly >= 0, some negative, NaN at frame 0 and sprinkled.

        Not pure noise, so that a picture of them shows something: the plate's columns are a
        dose series (activity rises from column 1 to 12), and every sixth of the run a stimulus
        starts a burst of motion that decays.
        """
        dose = np.float32(0.2 + 1.6 * column / max(1, PLATE_COLUMNS - 1))
        period = max(1, length // STIMULUS_BURSTS)
        phase = (np.arange(length, dtype=np.float32) % period) / np.float32(period)
        activity = np.float32(0.3) + dose * (1 + 4 * np.exp(np.float32(-10.0) * phase))
        noise = np.abs(self.rng.standard_normal(length, dtype=np.float32))
        values = (noise * activity * np.float32(20.0)).astype(np.float32)
        n_neg = max(1, length // 100)
        values[self.rng.integers(0, length, n_neg)] *= np.float32(-1.0)
        values[self.rng.integers(0, length, max(1, length // 1000))] = np.nan
        values[0] = np.nan
        return values

    def _sensors(self) -> dict[str, int]:
        names = [s[0] for s in SENSORS]
        known = self._named("sensors", "name", names)
        new = [s for s in SENSORS if s[0] not in known]
        new_ids = self._ids("sensors", len(new))
        self.w.insert(
            "sensors",
            ("id", "name", "description", "data_type", "blob_type", "n_between"),
            [(i, s[0], "synthetic", s[1], s[2], s[3]) for i, s in zip(new_ids, new, strict=True)],
        )
        known.update({s[0]: i for i, s in zip(new_ids, new, strict=True)})
        return {n: known[n] for n in names}

    def _sensor_data(self, run_ids: Sequence[int], sensor_ids: Mapping[str, int], n: int) -> int:
        rows, total = [], 0
        ids = iter(self._ids("sensor_data", len(run_ids) * len(SENSORS)))
        for r in run_ids:
            for name, data_type, _, _ in SENSORS:
                blob = encode_sensor(self._sensor_values(data_type, n, r), data_type)
                total += len(blob)
                rows.append((next(ids), r, sensor_ids[name], blob, hashlib.sha1(blob).digest()))
        self.w.insert("sensor_data", ("id", "run_id", "sensor_id", "floats", "floats_sha1"), rows)
        return total

    def _sensor_values(self, data_type: str, n: int, run: int) -> Any:
        if data_type == "utf8_char":
            return f"sauronx 1.{self.seed}.{run} — synthetic µ"
        kind = np.dtype(_SENSOR_CODECS[data_type][0])
        length = n + int(self.rng.integers(0, 5))
        if kind.kind == "f":
            return (self.rng.standard_normal(length) * 20.0 + 25.0).astype(kind)
        info = np.iinfo(kind)
        values = self.rng.integers(info.min, info.max, size=length, dtype=kind, endpoint=True)
        values[:2] = (info.min, info.max)  # the extremes exercise the signed/unsigned offset
        return values


def _when(day: int, hour: int = 0) -> str:
    return (_EPOCH + timedelta(days=day, hours=hour)).strftime("%Y-%m-%d %H:%M:%S")
