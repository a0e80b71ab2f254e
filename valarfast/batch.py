"""Batch queries: a feature of many wells as one matrix, stimulus frames, sensor data.

Every function here works in two steps, so that nothing is read twice and a cache can sit in
between:

1. a **plan**: one cheap metadata query returning, in the final row order, the row ids, well ids,
   (when needed, see below) blob lengths and the server's hashes. Runs given by id and a feature
   given by id or name are resolved in that same query. Unknown runs, wells or features and runs
   without data are reported here, before any blob is read and before ``out=`` is touched;
2. a **read**: one streamed query for the blobs of a set of row ids (unbuffered cursor), each
   row decoded on arrival by the compiled kernel straight into its row of the matrix. No model
   objects, no per-row arrays, no extra query per row.

>>> m = well_features(runs=[101, "2021-tag"], feature="MI")  # doctest: +SKIP
>>> m.values.shape, m.values.dtype  # doctest: +SKIP
((192, 150005), dtype('float32'))
>>> df = m.to_frame()  # wells x frames, indexed by well id, same memory  # doctest: +SKIP

Missing data: a requested well with no row for the feature gets a row of ``fill`` and length 0;
a run (runs=) or a request (wells=) with no row at all for the feature raises
:class:`~valarfast.errors.ValarLookupError` (that is a question with no answer, not data).
The matrix width is the longest row; shorter rows are padded with ``fill`` (NaN by default).
Several rows for one well and feature (the schema allows it) raise ValarError: none is picked.

The matrix width, two ways (``benchmarks/compare_batch.py`` measures both):

- ``out=None`` (and no cache): the plan asks for no length, because ``LENGTH(floats)`` makes
  MariaDB read every blob one more time (about 15 ms for 115 MB against 3 ms without it). The
  width is learnt while streaming (:class:`~valarfast.growing.GrowingRows`): the first row sets
  it, a longer row widens the matrix in place (cheap: rows of a run have nearly equal lengths).
  A corrupt blob (not a multiple of 4 bytes) is found when it arrives: BlobDecodeError naming
  well and feature, and the half-filled matrix is dropped (nothing partial is returned);
- ``out=`` given, or a cache in use: the plan has ``LENGTH()`` (a cache asks it only for rows it
  does not hold), so ``out=`` is checked before anything is written, a corrupt length is refused
  before any blob is read and ``out=`` stays untouched, and ``well_features_shape`` is exact.

If rows change between the two queries (a concurrent writer), the read raises ValarError and
returns nothing; ``out=`` may then hold some decoded rows.

Dask: ``well_features_shape(runs=[r], feature=f)`` costs one metadata query and gives the shape
of a run's block, so a ``dask.array`` chunked by run can be laid out without reading blobs and
each chunk computed by ``well_features(runs=[r], feature=f).values``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .errors import BlobDecodeError, ValarError, ValarLookupError
from .streaming import MAX_IDS_PER_QUERY, current_database, in_list, query_all, stream_rows

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "SensorDataResult",
    "StimulusFrameMatrix",
    "WellFeatureMatrix",
    "WellFeaturePlan",
    "plan_well_features",
    "read_well_features",
    "sensor_data",
    "stimulus_frames",
    "well_features",
    "well_features_shape",
]

FLOAT_TYPE = "float"  # well_features.floats: big-endian binary32
FRAME_TYPE = "unsigned_byte"  # stimulus_frames.frames: JVM signed bytes, value - 128
STREAM_MATRIX_BYTES = 64 * 2**20  # matrices larger than this are written with streaming stores


# --------------------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class WellFeaturePlan:
    """What a well-feature read will return, from one metadata query (no blob read).

    Row ``i`` is well ``well_ids[i]``; ``ids[i]`` is its ``well_features.id`` (-1: no row),
    ``lengths[i]`` its number of frames, ``sha1s[i]`` the server's ``sha1`` column (None: no row).
    ``sized=False`` (``plan_well_features(sized=False)``): lengths were not asked for (all 0);
    such a plan has no ``shape`` and is read only by :func:`well_features` itself.
    """

    feature_id: int
    feature_name: str
    ids: np.ndarray  # int64
    well_ids: np.ndarray  # int64
    run_ids: np.ndarray  # int64
    well_indices: np.ndarray  # int64
    lengths: np.ndarray  # int64, frames
    sha1s: tuple[bytes | None, ...]
    sized: bool = True

    dtype = np.dtype(np.float32)
    type_name = FLOAT_TYPE

    @property
    def shape(self) -> tuple[int, int]:
        """(wells, frames of the longest row)."""
        if not self.sized:
            raise ValueError("this plan was made with sized=False: it has no lengths")
        width = int(self.lengths.max()) if len(self.lengths) else 0
        return (len(self.well_ids), width)

    @property
    def nbytes(self) -> int:
        """Bytes of the matrix this plan fills."""
        rows, width = self.shape
        return rows * width * self.dtype.itemsize

    @property
    def present(self) -> np.ndarray:
        """Indices (int64) of the rows that have data on the server."""
        return np.flatnonzero(self.ids >= 0)


@dataclass(frozen=True, eq=False)
class WellFeatureMatrix:
    """One feature of many wells: ``values[i]`` is well ``well_ids[i]``, padded after its length."""

    values: np.ndarray  # float32 (n_wells, n_frames)
    well_ids: np.ndarray  # int64 (n_wells,)
    lengths: np.ndarray  # int64 (n_wells,)
    run_ids: np.ndarray  # int64 (n_wells,)
    well_indices: np.ndarray  # int64 (n_wells,)
    feature_id: int
    feature_name: str

    def to_frame(self) -> pd.DataFrame:
        """A pandas DataFrame (wells x frames) over the same memory, indexed by well id.

        >>> m.to_frame().loc[well_id]  # doctest: +SKIP
        """
        pd = _pandas()
        index = pd.Index(self.well_ids, name="well")
        return pd.DataFrame(self.values, index=index, copy=False)


@dataclass(frozen=True, eq=False)
class StimulusFrameMatrix:
    """Stimulus frames, uint8 (n_stimuli, n_frames); assay ``assay_ids[k]`` starts at ``starts[k]``.

    One row per stimulus, sorted by id.
    """

    values: np.ndarray  # uint8
    stimulus_ids: np.ndarray  # int64 (n_stimuli,)
    stimulus_names: tuple[str, ...]
    assay_ids: np.ndarray  # int64 (n_positions,)
    starts: np.ndarray  # int64 (n_positions,)
    assay_lengths: np.ndarray  # int64 (n_positions,)
    battery_id: int | None

    def to_frame(self) -> pd.DataFrame:
        """A pandas DataFrame (stimuli x frames) over the same memory, indexed by stimulus name."""
        pd = _pandas()
        return pd.DataFrame(
            self.values, index=pd.Index(self.stimulus_names, name="stimulus"), copy=False
        )


@dataclass(frozen=True, eq=False)
class SensorDataResult:
    """One sensor's data for many runs, typed by the sensor's ``data_type``.

    ``values[i]`` is run ``run_ids[i]``'s data: an array of ``dtype`` (a ``str`` for
    ``utf8_char``), or None when that run has no data for the sensor.
    """

    sensor_id: int
    sensor_name: str
    data_type: str
    dtype: np.dtype | None  # None for utf8_char (text)
    run_ids: np.ndarray  # int64
    values: tuple[np.ndarray | str | None, ...]

    def by_run(self) -> dict[int, np.ndarray | str | None]:
        """``{run id: values}``."""
        return dict(zip((int(r) for r in self.run_ids), self.values, strict=True))


# ----------------------------------------------------------------------------- well features


def plan_well_features(
    *,
    runs: Any = None,
    wells: Any = None,
    feature: Any = "MI",
    known_bytes: Callable[[int, bytes | None], int | None] | None = None,
    sized: bool = True,
) -> WellFeaturePlan:
    """Resolve ``runs`` or ``wells`` and ``feature`` and run the metadata query; read no blob.

    Rows are ordered by the runs as given, then by well index (``wells=``: as given).
    ``known_bytes(row_id, sha1)``: a blob length a cache already knows for that version, or
    None; only the other rows get ``LENGTH()`` (MariaDB reads a whole blob to compute it).
    ``sized=False``: no lengths at all (no blob is touched by the server; see the module doc).
    """
    from . import model

    if (runs is None) == (wells is None):
        raise TypeError("give exactly one of runs= or wells=")
    db = current_database()
    length = "LENGTH(wf.floats)" if known_bytes is None and sized else "NULL"
    # run ids and a feature id or name: resolved in the metadata query itself
    at_once = None if runs is None else _plan_rows_at_once(db, runs, feature, length)
    feat: Any
    if at_once is not None:
        rows, run_ids, feat = at_once
    else:
        feat = model.Features.fetch(_scalar(feature, "feature"))
    cols = (
        f"SELECT w.id, w.run_id, w.well_index, wf.id, {length}, wf.sha1 "
        "FROM wells w LEFT JOIN well_features wf ON wf.well_id = w.id AND wf.type_id = "
    )
    if runs is not None:
        if at_once is None:
            run_ids = _resolve_ids(model.Runs, runs, "run")
            sql = cols + f"{db.param} WHERE w.run_id IN {in_list(db, len(run_ids))}"
            rows = query_all(db, sql, [feat.id, *run_ids])
        rank = {r: k for k, r in enumerate(run_ids)}
        rows.sort(key=lambda t: (rank[t[1]], t[2], _none_last(t[3])))
        _check_runs_have_data(rows, run_ids, feat.name)
    else:
        well_ids = _resolve_ids(model.Wells, wells, "well")
        sql = cols + f"{db.param} WHERE w.id IN {in_list(db, len(well_ids))}"
        rows = query_all(db, sql, [feat.id, *well_ids])
        rank = {w: k for k, w in enumerate(well_ids)}
        rows.sort(key=lambda t: (rank[t[0]], _none_last(t[3])))
        if all(t[3] is None for t in rows):
            raise ValarLookupError(
                f"none of the {len(well_ids)} wells has well_features for feature {feat.name!r}"
            )
    _check_unique_rows(rows, feat.name)
    if known_bytes is not None and sized:
        rows = _complete_lengths(db, rows, known_bytes)
    for well, _, _, wf_id, nbytes, _ in rows:
        if wf_id is not None and sized and int(nbytes) % 4:
            raise BlobDecodeError(
                f"well_features {wf_id} (well {well}, feature {feat.name!r}) holds {nbytes} "
                "bytes, not a multiple of 4: corrupt blob; nothing was read"
            )
    return WellFeaturePlan(
        feature_id=int(feat.id),
        feature_name=str(feat.name),
        ids=np.array([-1 if t[3] is None else t[3] for t in rows], dtype=np.int64),
        well_ids=np.array([t[0] for t in rows], dtype=np.int64),
        run_ids=np.array([t[1] for t in rows], dtype=np.int64),
        well_indices=np.array([t[2] for t in rows], dtype=np.int64),
        lengths=np.array([0 if t[4] is None else int(t[4]) // 4 for t in rows], dtype=np.int64),
        sha1s=tuple(None if t[3] is None else bytes(t[5]) for t in rows),
        sized=sized,
    )


def well_features_shape(
    *, runs: Any = None, wells: Any = None, feature: Any = "MI"
) -> tuple[int, int]:
    """The (wells, frames) shape ``well_features`` would return, from the metadata query only."""
    return plan_well_features(runs=runs, wells=wells, feature=feature).shape


def read_well_features(
    plan: WellFeaturePlan,
    *,
    out: np.ndarray | None = None,
    fill: float = math.nan,
    rows: Sequence[int] | np.ndarray | None = None,
    progress: bool = False,
    on_row: Callable[[int], None] | None = None,
) -> WellFeatureMatrix:
    """Stream the blobs of ``plan`` into ``out`` (allocated when None) and return the matrix.

    ``rows``: only these row indices are fetched and padded (the others of ``out`` are left as
    they are: a cache fills them). ``out`` must be float32, C-contiguous, writeable, with
    ``plan.shape[0]`` rows and at least ``plan.shape[1]`` columns; it is checked before anything
    is written. Rows are padded with ``fill`` after their length. ``on_row(i)`` is called
    once row ``i`` is decoded (the cache stores it while the rest streams).
    A ``sized=False`` plan is read whole into a new matrix whose width is learnt while streaming
    (no ``out``, ``rows`` or ``on_row``).
    """
    from . import blobs

    if not plan.sized:
        if out is not None or rows is not None or on_row is not None:
            raise ValueError("a sized=False plan takes no out=, rows= or on_row=: plan it sized")
        return _read_growing(plan, fill=fill, progress=progress)
    n, width = plan.shape
    matrix = _prepare_out(out, (n, width), plan.dtype)
    chosen = np.arange(n, dtype=np.int64) if rows is None else _check_rows(rows, n)
    lengths = plan.lengths
    # pad first, the tails only (one kernel call), never the whole matrix
    if rows is None:
        blobs.pad_rows(matrix, lengths, plan.type_name, fill)
    else:
        for i in chosen.tolist():
            blobs.fill_row(matrix[i], int(lengths[i]), plan.type_name, fill)
    wanted = [i for i in chosen.tolist() if plan.ids[i] >= 0]
    _stream_into(
        wanted,
        plan.ids,
        lengths,
        matrix,
        sql="SELECT id, floats, sha1 FROM well_features WHERE id IN ",
        type_name=plan.type_name,
        digests=plan.sha1s,
        on_row=on_row,
        describe=lambda i: f"well {plan.well_ids[i]}, feature {plan.feature_name!r}",
        progress=progress,
    )
    return WellFeatureMatrix(
        values=matrix,
        well_ids=plan.well_ids,
        lengths=plan.lengths,
        run_ids=plan.run_ids,
        well_indices=plan.well_indices,
        feature_id=plan.feature_id,
        feature_name=plan.feature_name,
    )


def well_features(
    *,
    runs: Any = None,
    wells: Any = None,
    feature: Any = "MI",
    out: np.ndarray | None = None,
    fill: float = math.nan,
    progress: bool = False,
    cache: Any = None,
) -> WellFeatureMatrix:
    """One feature of every well of ``runs`` (or of ``wells``) as one float32 matrix.

    ``runs``/``wells``/``feature`` take what ``fetch`` takes (ids, names or tags, instances;
    lists for runs and wells). Unknown ones raise ValarLookupError before any blob is read.
    ``cache``: rows whose server hash matches a local entry are read from disk, the others
    fetched and stored (None: as the config says; False: off; True, a path or a
    :class:`~valarfast.cache.BlobCache`: that cache; see :mod:`valarfast.cache`).

    >>> m = well_features(runs=[1, 2], feature="MI")  # doctest: +SKIP
    >>> m.values[m.well_ids == 17]  # doctest: +SKIP
    """
    if out is not None:  # misuse of out= is reported before the database is asked anything
        _prepare_out(out, None, np.dtype(np.float32))
    if progress:
        _tqdm()
    from .cache import cache_for_database, make_keys

    store = cache_for_database(cache, current_database())
    if store is None:  # without out=, no LENGTH(): the width is learnt while streaming
        plan = plan_well_features(runs=runs, wells=wells, feature=feature, sized=out is not None)
        return read_well_features(plan, out=out, fill=fill, progress=progress)
    lookup = store.length_lookup("well_features", FLOAT_TYPE, np.float32)
    plan = plan_well_features(runs=runs, wells=wells, feature=feature, known_bytes=lookup)
    matrix = _prepare_out(out, plan.shape, plan.dtype)
    keys = make_keys("well_features", plan.ids, plan.sha1s, plan.type_name)
    missing = store.fill_from_cache(
        keys, matrix, lengths=plan.lengths, fill=plan.dtype.type(fill), pad=True
    )
    with store.storing(keys, matrix, plan.lengths) as on_row:  # written while the rest streams
        return read_well_features(
            plan, out=matrix, fill=fill, rows=missing, progress=progress, on_row=on_row
        )


# ---------------------------------------------------------------------------- stimulus frames


def stimulus_frames(
    battery: Any = None, *, assays: Any = None, cache: Any = None
) -> StimulusFrameMatrix:
    """Every stimulus of a battery (or of assays laid end to end) as uint8 frames.

    Row ``k`` is stimulus ``stimulus_ids[k]`` (sorted by id) over the whole battery; assay
    ``assay_ids[j]`` occupies ``starts[j] : starts[j] + assay_lengths[j]``; frames no assay sets
    are 0. With ``battery`` the starts are its ``assay_positions``; with ``assays=`` the assays
    follow each other in the order given, from 0. ``cache`` as for :func:`well_features`
    (rows keyed by ``frames_sha1``).

    >>> sf = stimulus_frames("my battery")  # doctest: +SKIP
    >>> sf.values[sf.stimulus_names.index("blue LED")]  # doctest: +SKIP
    """
    from . import model

    if (battery is None) == (assays is None):
        raise TypeError("give exactly one of battery or assays=")
    db = current_database()
    battery_id: int | None = None
    if battery is not None:
        bat = model.Batteries.fetch(_scalar(battery, "battery"))
        battery_id = int(bat.id)
        positions = query_all(
            db,
            "SELECT ap.assay_id, ap.start, a.length FROM assay_positions ap "
            f"JOIN assays a ON a.id = ap.assay_id WHERE ap.battery_id = {db.param} "
            "ORDER BY ap.start, ap.id",
            [battery_id],
        )
        total = int(bat.length)
    else:
        assay_ids = _resolve_ids(model.Assays, assays, "assay")
        found = dict(
            query_all(
                db,
                f"SELECT id, length FROM assays WHERE id IN {in_list(db, len(set(assay_ids)))}",
                sorted(set(assay_ids)),
            )
        )
        positions, start = [], 0
        for a in assay_ids:
            positions.append((a, start, found[a]))
            start += int(found[a])
        total = start
    if not positions:
        raise ValarLookupError(f"battery {battery_id} has no assay positions")
    unique_assays = sorted({int(p[0]) for p in positions})
    from .cache import cache_for_database, make_keys

    store = cache_for_database(cache, db)
    meta = query_all(
        db,
        f"SELECT sf.id, sf.assay_id, sf.stimulus_id, {'NULL' if store else 'LENGTH(sf.frames)'}, "
        "s.name, sf.frames_sha1 FROM stimulus_frames sf JOIN stimuli s ON s.id = sf.stimulus_id "
        f"WHERE sf.assay_id IN {in_list(db, len(unique_assays))} ORDER BY sf.id",
        unique_assays,
    )
    sha1_of = {int(t[0]): None if t[5] is None else bytes(t[5]) for t in meta}
    keys = make_keys("stimulus_frames", list(sha1_of), list(sha1_of.values()), FRAME_TYPE)
    key_of = dict(zip(sha1_of, keys, strict=True))
    if store is not None:  # lengths the cache knows for these versions, LENGTH() for the others
        known = {i: store.known_items(k, np.uint8) if k else None for i, k in key_of.items()}
        asked = _blob_lengths(
            db, "stimulus_frames", "frames", [i for i, n in known.items() if n is None]
        )
        meta = [(*t[:3], asked.get(int(t[0]), known[int(t[0])]), *t[4:]) for t in meta]
    spans = {int(a): int(length) for a, _, length in positions}
    for sf_id, a, _, nbytes, name, _ in meta:
        if int(nbytes) > spans[int(a)]:
            raise BlobDecodeError(
                f"stimulus_frames {sf_id} (assay {a}, stimulus {name!r}) has {nbytes} frames, "
                f"more than the assay's length {spans[int(a)]}"
            )
    stimuli = sorted({(int(s), str(name)) for _, _, s, _, name, _ in meta})
    row_of = {s: k for k, (s, _) in enumerate(stimuli)}
    width = max([total] + [int(st) + int(length) for _, st, length in positions])
    values = np.zeros((len(stimuli), width), dtype=np.uint8)
    starts_by_assay: dict[int, list[int]] = {}
    for a, st, _ in positions:
        starts_by_assay.setdefault(int(a), []).append(int(st))
    by_id = {int(sf_id): (int(a), int(s), int(nbytes)) for sf_id, a, s, nbytes, _, _ in meta}
    from .blobs import decode_into_row

    fetch = []
    for sf_id, (a, s, nbytes) in sorted(by_id.items()):  # cached rows: read into place
        row, (first, *others) = values[row_of[s]], starts_by_assay[a]
        key = key_of[sf_id]
        if (
            store is None
            or key is None
            or store.read_into(key, row[first : first + nbytes], expected_items=nbytes, fill=0)
            is None
        ):
            fetch.append(sf_id)
            continue
        for st in others:
            row[st : st + nbytes] = row[first : first + nbytes]
    for chunk in _chunks(fetch):
        sql = (
            "SELECT id, frames, frames_sha1 FROM stimulus_frames "
            f"WHERE id IN {in_list(db, len(chunk))}"
        )
        for sf_id, blob, sha1 in stream_rows(db, sql, chunk, zero_copy=True):
            a, s, nbytes = by_id[int(sf_id)]
            row = values[row_of[s]]
            first, *others = starts_by_assay[a]
            if len(blob) != nbytes or (sha1 and bytes(sha1)) != sha1_of[int(sf_id)]:
                raise _changed(f"stimulus_frames {sf_id}", len(blob))
            try:
                decode_into_row(blob, FRAME_TYPE, row[first : first + nbytes])
            except ValueError as e:
                raise BlobDecodeError(
                    f"stimulus_frames {sf_id} (assay {a}, stimulus {s}): {e}"
                ) from e
            for st in others:
                row[st : st + nbytes] = row[first : first + nbytes]
            key = key_of[int(sf_id)]
            if store is not None and key is not None:
                store.write(key, row[first : first + nbytes])
    if store is not None and fetch:
        store.evict_if_needed()
    return StimulusFrameMatrix(
        values=values,
        stimulus_ids=np.array([s for s, _ in stimuli], dtype=np.int64),
        stimulus_names=tuple(name for _, name in stimuli),
        assay_ids=np.array([p[0] for p in positions], dtype=np.int64),
        starts=np.array([p[1] for p in positions], dtype=np.int64),
        assay_lengths=np.array([p[2] for p in positions], dtype=np.int64),
        battery_id=battery_id,
    )


# -------------------------------------------------------------------------------- sensor data


def sensor_data(runs: Any, sensor: Any, *, cache: Any = None) -> SensorDataResult:
    """One sensor's data for each run, decoded by the sensor's ``data_type``.

    ``cache`` as for :func:`well_features` (text sensors, ``utf8_char``, are never cached).

    >>> sd = sensor_data([1, 2], "photosensor")  # doctest: +SKIP
    >>> sd.by_run()[1].dtype  # doctest: +SKIP
    dtype('uint8')
    """
    from . import blobs, model

    sens = model.Sensors.fetch(_scalar(sensor, "sensor"))
    data_type = str(sens.data_type)
    run_ids = _resolve_ids(model.Runs, runs, "run")
    if data_type == "utf8_char":
        dtype, itemsize = None, 1
    else:
        try:
            dtype = np.dtype(blobs.dtype_for(data_type))
        except (ValueError, KeyError) as e:
            raise BlobDecodeError(
                f"sensor {sens.name!r} has data_type {data_type!r}, which valarfast cannot decode"
            ) from e
        itemsize = dtype.itemsize
    db = current_database()
    from .cache import CacheKey, cache_for_database

    store = None if dtype is None else cache_for_database(cache, db)
    meta = query_all(
        db,
        f"SELECT id, run_id, {'NULL' if store else 'LENGTH(floats)'}, floats_sha1 FROM sensor_data "
        f"WHERE sensor_id = {db.param} AND run_id IN {in_list(db, len(run_ids))} ORDER BY id",
        [sens.id, *run_ids],
    )
    got: dict[int, np.ndarray | str] = {}
    run_of: dict[int, int] = {}
    keys: dict[int, CacheKey] = {}
    sha1_of: dict[int, bytes] = {}
    for sd_id, run, _, sha1 in meta:
        if int(run) in run_of.values():
            raise ValarError(f"run {run} has several sensor_data rows for sensor {sens.name!r}")
        run_of[int(sd_id)] = int(run)
        sha1_of[int(sd_id)] = bytes(sha1)
        if store is not None:  # a hit needs no LENGTH(): the entry knows its size
            key = keys[int(sd_id)] = CacheKey("sensor_data", int(sd_id), bytes(sha1), data_type)
            cached = store.read_array(key, dtype)
            if cached is not None:
                got[int(run)] = cached
    fetch = sorted(i for i, r in run_of.items() if r not in got)
    lengths = (
        {int(t[0]): t[2] for t in meta}
        if store is None
        else _blob_lengths(db, "sensor_data", "floats", fetch)
    )
    for sd_id in fetch:  # corrupt lengths refused before any blob is read
        if int(lengths[sd_id]) % itemsize:
            raise BlobDecodeError(
                f"sensor_data {sd_id} (run {run_of[sd_id]}, sensor {sens.name!r}, {data_type}) "
                f"holds {lengths[sd_id]} bytes, not a multiple of {itemsize}: corrupt blob"
            )
    for chunk in _chunks(fetch):
        sql = (
            f"SELECT id, floats, floats_sha1 FROM sensor_data WHERE id IN {in_list(db, len(chunk))}"
        )
        for sd_id, blob, sha1 in stream_rows(db, sql, chunk, zero_copy=True):
            what = f"sensor_data {sd_id} (run {run_of[int(sd_id)]}, sensor {sens.name!r})"
            if bytes(sha1) != sha1_of[int(sd_id)]:
                raise _changed(what, len(blob))
            try:
                decoded = got[run_of[int(sd_id)]] = blobs.decode(blob, data_type)
            except (ValueError, UnicodeDecodeError) as e:
                raise BlobDecodeError(f"{what}: {e}") from e
            if store is not None and isinstance(decoded, np.ndarray):
                store.write(keys[int(sd_id)], decoded)
    if store is not None and fetch:
        store.evict_if_needed()
    return SensorDataResult(
        sensor_id=int(sens.id),
        sensor_name=str(sens.name),
        data_type=data_type,
        dtype=dtype,
        run_ids=np.array(run_ids, dtype=np.int64),
        values=tuple(got.get(r) for r in run_ids),
    )


# ---------------------------------------------------------------------------------- internals


def _stream_into(
    wanted: list[int],
    ids: np.ndarray,
    lengths: np.ndarray,
    matrix: np.ndarray,
    *,
    sql: str,
    type_name: str,
    describe: Callable[[int], str],
    progress: bool,
    digests: Sequence[bytes | None] | None = None,
    on_row: Callable[[int], None] | None = None,
) -> None:
    """Fetch rows ``wanted`` (by ``ids``) with one streamed query and decode each into its row.

    With ``digests`` the query's third column (the server's hash) must still be the plan's: a
    row changed in between is an error, never a value stored in the cache under an old hash.
    """
    from .blobs import decode_into_row

    if not wanted:
        return
    db = current_database()
    itemsize = matrix.dtype.itemsize
    stream = matrix.nbytes > STREAM_MATRIX_BYTES  # non-temporal stores past the caches
    position = {int(ids[i]): i for i in wanted}
    expected = {int(ids[i]): int(lengths[i]) * itemsize for i in wanted}
    bar = _tqdm()(total=len(wanted), unit="row", desc="well features") if progress else None
    seen = 0
    try:
        for chunk in _chunks(sorted(position)):
            query = sql + in_list(db, len(chunk))
            for row_id, blob, *tag in stream_rows(db, query, chunk, zero_copy=True):
                if len(blob) != expected[row_id] or (
                    tag and digests is not None and bytes(tag[0]) != digests[position[row_id]]
                ):
                    raise _changed(f"row {row_id} ({describe(position[row_id])})", len(blob))
                try:
                    decode_into_row(blob, type_name, matrix[position[row_id]], stream=stream)
                except ValueError as e:
                    what = f"row {row_id} ({describe(position[row_id])})"
                    raise BlobDecodeError(f"{what}: {e}") from e
                seen += 1
                if on_row is not None:  # the row is final (a cache stores it meanwhile)
                    on_row(position[row_id])
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if seen != len(wanted):
        raise ValarError(
            f"{len(wanted) - seen} of {len(wanted)} rows disappeared between the metadata query "
            "and the blob query (deleted meanwhile?); nothing is returned"
        )


class _Feature(NamedTuple):
    id: int
    name: str


def _plan_rows_at_once(
    db: Any, runs: Any, feature: Any, length: str
) -> tuple[list[tuple[Any, ...]], list[int], _Feature] | None:
    """The metadata rows of runs given by id (or instance) and a feature given by id or name
    (or instance), resolved in the same query; None when the general path must run instead
    (other kinds of references, duplicates, or anything not found: it names what is missing).
    """
    from . import model

    things = _as_list(runs)
    run_ids = [
        int(t.id) if isinstance(t, model.Runs) else int(t)
        for t in things
        if isinstance(t, (model.Runs, Integral)) and not isinstance(t, bool)
    ]
    if len(run_ids) != len(things) or len(set(run_ids)) != len(run_ids):
        return None
    if isinstance(feature, model.Features):
        feature = feature.id
    key: int | str
    if isinstance(feature, Integral) and not isinstance(feature, bool):
        column, key = "f.id", int(feature)
    elif isinstance(feature, str):
        column, key = "f.name", feature
    else:
        return None
    sql = (
        f"SELECT w.id, w.run_id, w.well_index, wf.id, {length}, wf.sha1, f.id, f.name "
        "FROM features f CROSS JOIN wells w LEFT JOIN well_features wf "
        f"ON wf.well_id = w.id AND wf.type_id = f.id WHERE {column} = {db.param} "
        f"AND w.run_id IN {in_list(db, len(run_ids))}"
    )
    found = query_all(db, sql, [key, *run_ids])
    if not found or {t[1] for t in found} != set(run_ids):
        return None
    feat = _Feature(int(found[0][6]), str(found[0][7]))
    return [t[:6] for t in found], run_ids, feat


def _read_growing(plan: WellFeaturePlan, *, fill: float, progress: bool) -> WellFeatureMatrix:
    """Stream every row of an unsized plan into a :class:`~valarfast.growing.GrowingRows`.

    Each blob is checked against the plan's hash (a row changed since the plan is an error) and
    decoded on arrival; a corrupt one raises BlobDecodeError naming well and feature, and the
    half-filled matrix is dropped.
    """
    from .growing import GrowingRows

    wanted = plan.present.tolist()
    rows = GrowingRows(len(plan.ids), plan.type_name)
    db = current_database()
    position = {int(plan.ids[i]): i for i in wanted}
    digests = plan.sha1s
    bar = _tqdm()(total=len(wanted), unit="row", desc="well features") if progress else None
    sql = "SELECT id, floats, sha1 FROM well_features WHERE id IN "
    seen = 0
    try:
        for chunk in _chunks(sorted(position)):
            query = sql + in_list(db, len(chunk))
            for row_id, blob, sha1 in stream_rows(db, query, chunk, zero_copy=True):
                i = position[row_id]
                if bytes(sha1) != digests[i]:
                    raise _changed(f"row {row_id} (well {plan.well_ids[i]})", len(blob))
                try:
                    rows.write(i, blob)
                except ValueError as e:
                    what = f"row {row_id} (well {plan.well_ids[i]}, feature {plan.feature_name!r})"
                    raise BlobDecodeError(f"{what}: {e}; nothing is returned") from e
                seen += 1
                if bar is not None:
                    bar.update(1)
        if seen != len(wanted):
            raise ValarError(
                f"{len(wanted) - seen} of {len(wanted)} rows disappeared between the metadata "
                "query and the blob query (deleted meanwhile?); nothing is returned"
            )
        values, lengths = rows.finish(fill)
    except BaseException:
        rows.close()
        raise
    finally:
        if bar is not None:
            bar.close()
    return WellFeatureMatrix(
        values=values,
        well_ids=plan.well_ids,
        lengths=lengths,
        run_ids=plan.run_ids,
        well_indices=plan.well_indices,
        feature_id=plan.feature_id,
        feature_name=plan.feature_name,
    )


def _complete_lengths(
    db: Any, rows: list[tuple[Any, ...]], known_bytes: Callable[[int, bytes | None], int | None]
) -> list[tuple[Any, ...]]:
    """Blob lengths of metadata rows: what ``known_bytes`` knows, one LENGTH() query for others."""
    out = [
        t
        if t[3] is None
        else (*t[:4], known_bytes(int(t[3]), None if t[5] is None else bytes(t[5])), t[5])
        for t in rows
    ]
    unknown = sorted({int(t[3]) for t in out if t[3] is not None and t[4] is None})
    found = _blob_lengths(db, "well_features", "floats", unknown)
    return [
        t if t[3] is None or t[4] is not None else (*t[:4], found[int(t[3])], t[5]) for t in out
    ]


def _blob_lengths(db: Any, table: str, column: str, ids: list[int]) -> dict[int, int]:
    """``LENGTH(column)`` in bytes of rows ``ids`` of ``table``; ValarError if one is gone."""
    found: dict[int, int] = {}
    for chunk in _chunks(sorted(ids)):
        sql = f"SELECT id, LENGTH({column}) FROM {table} WHERE id IN {in_list(db, len(chunk))}"
        found.update((int(i), int(n)) for i, n in query_all(db, sql, chunk))
    gone = [i for i in ids if i not in found]
    if gone:
        raise ValarError(
            f"{table} {gone[:10]} disappeared between two metadata queries (deleted "
            "meanwhile?); nothing was read"
        )
    return found


def _changed(what: str, nbytes: int) -> ValarError:
    return ValarError(
        f"{what} changed between the metadata query and the blob query ({nbytes} bytes now); "
        "nothing is returned"
    )


# checks of a caller's out= matrix, in order: (is bad, message)
_OUT_CHECKS: tuple[tuple[Callable[[Any, np.dtype], bool], Callable[[Any, np.dtype], str]], ...] = (
    (
        lambda o, d: not isinstance(o, np.ndarray),
        lambda o, d: f"out= must be a numpy array, not {type(o).__name__}",
    ),
    (lambda o, d: o.dtype != d, lambda o, d: f"out= must have dtype {d}, not {o.dtype}"),
    (lambda o, d: o.ndim != 2, lambda o, d: f"out= must be 2-D, not {o.ndim}-D"),
    (lambda o, d: not o.flags.c_contiguous, lambda o, d: "out= must be C-contiguous"),
    (lambda o, d: not o.flags.writeable, lambda o, d: "out= is read-only"),
)


def _prepare_out(
    out: np.ndarray | None, shape: tuple[int, int] | None, dtype: np.dtype
) -> np.ndarray:
    """Check the caller's matrix (or allocate one); ``shape=None`` checks all but the shape."""
    if out is None:
        if shape is None:
            raise TypeError("no out= to check")
        return np.empty(shape, dtype=dtype)
    for bad, message in _OUT_CHECKS:
        if bad(out, dtype):
            raise ValueError(message(out, dtype))
    if shape is not None and (out.shape[0] != shape[0] or out.shape[1] < shape[1]):
        raise ValueError(
            f"out= has shape {out.shape}; this read needs {shape[0]} rows and at least "
            f"{shape[1]} columns"
        )
    return out


def _check_rows(rows: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    chosen = np.asarray(rows, dtype=np.int64).ravel()
    if chosen.size and (chosen.min() < 0 or chosen.max() >= n):
        raise ValueError(f"rows= must be indices in 0..{n - 1}")
    return chosen


def _check_runs_have_data(rows: list[tuple[Any, ...]], run_ids: list[int], feature: str) -> None:
    with_data = {t[1] for t in rows if t[3] is not None}
    empty = [r for r in run_ids if r not in with_data]
    if empty:
        raise ValarLookupError(
            f"run(s) {empty} have no well_features for feature {feature!r} "
            "(not computed for these runs, or no wells); nothing was read"
        )


def _check_unique_rows(rows: list[tuple[Any, ...]], feature: str) -> None:
    dup = sorted(w for w, k in Counter(t[0] for t in rows).items() if k > 1)
    if dup:
        raise ValarError(
            f"well(s) {dup[:10]} have several well_features rows for feature {feature!r}; "
            "valarfast will not pick one"
        )


def _none_last(value: Any) -> tuple[int, int]:
    return (1, 0) if value is None else (0, int(value))


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for k in range(0, len(ids), MAX_IDS_PER_QUERY):
        yield ids[k : k + MAX_IDS_PER_QUERY]


def _scalar(thing: Any, what: str) -> Any:
    if isinstance(thing, np.integer):
        return int(thing)
    if isinstance(thing, (list, tuple, set, np.ndarray)):
        raise TypeError(f"{what} must be one {what}, not a {type(thing).__name__}")
    return thing


def _as_list(things: Any) -> list[Any]:
    if isinstance(things, (str, bytes, int, float, np.integer)) or hasattr(things, "_meta"):
        things = [things]
    out = [int(t) if isinstance(t, np.integer) else t for t in things]
    if not out:
        raise ValueError("an empty list was given: nothing to fetch")
    return out


def _resolve_ids(model_class: Any, things: Any, what: str) -> list[int]:
    """Ids of ``things`` (what ``fetch_all`` takes), in order; duplicates are an error."""
    found = model_class.fetch_all(_as_list(things))
    ids = [int(x.id) for x in found]
    dup = sorted(i for i, k in Counter(ids).items() if k > 1)
    if dup:
        raise ValueError(f"{what}(s) {dup} given more than once")
    return ids


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - pandas is installed in the test env
        raise ImportError("to_frame() needs pandas: pip install 'valarfast[pandas]'") from e
    return pd


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError as e:  # pragma: no cover - tqdm is installed in the test env
        raise ImportError("progress=True needs tqdm: pip install 'valarfast[progress]'") from e
    return tqdm
