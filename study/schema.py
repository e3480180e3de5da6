"""The row schema of a run (DESIGN.md, "Row schema"), named once for `study` and `analysis`:
column names and prefixes, Arrow types, the ``artifact.*`` descriptors, the order of the
ranking table, and the one atomic write. Imports the standard library and pyarrow only,
never torch, Ray or polars: `analysis` reads it without the training stack.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

# ------------------------------------------------------------------ columns


class Prefix(str):
    """A column prefix: ``MEASURE.col("x") == "measure.x"``, ``MEASURE.holds("measure.x")``."""

    def col(self, name: str) -> str:
        return self + name

    def holds(self, col: str) -> bool:
        return col.startswith(self)


MEASURE = Prefix("measure.")    # float64, NaN where not defined (nan_reasons says why)
MEASURE_CFG = Prefix("measure_cfg.")  # string: the measure's settings hash (registry.settings_hash)
# float64, with [measures] repeats = R > 1 only: the sample standard deviation (ddof = 1) of the
# R draws of a stochastic measure whose mean is measure.<name>; 0.0 for a deterministic one
# (computed once: no spread by construction); NaN where a draw is NaN
MEASURE_SD = Prefix("measure_sd.")
HP = Prefix("hp.")              # one column per grid axis, typed by its values
SECONDS = Prefix("seconds.")    # what a measure cost (shared work charged to its group)
ARTIFACT = Prefix("artifact.")  # list<float64> for plots, described in ARTIFACTS
PREFIXES = (MEASURE, MEASURE_CFG, MEASURE_SD, HP, SECONDS, ARTIFACT)
measure_col, hp_col, seconds_col, artifact_col = MEASURE.col, HP.col, SECONDS.col, ARTIFACT.col
is_measure, is_hp, is_seconds, is_artifact = MEASURE.holds, HP.holds, SECONDS.holds, ARTIFACT.holds
cfg_col, is_cfg = MEASURE_CFG.col, MEASURE_CFG.holds
sd_col, is_sd = MEASURE_SD.col, MEASURE_SD.holds

IDENTITY = ("run_id", "study", "dataset", "model", "seed")
OUTCOMES = ("train_acc", "test_acc", "train_loss", "test_loss", "gap", "loss_gap")  # gap = train − test acc
# final_lr: the learning rate of the last training step (a schedule's rate at stopping; it
# bounds λ_max there, the edge of stability); absent from rows written before it was recorded
TRAINING = ("converged", "diverged", "steps", "epochs", "train_seconds", "final_lr", "n_train", "n_test")
REMEASURED = "remeasured_at"  # when `study measure` last rewrote the row's measures (else absent)
REPEATS = "measure_repeats"  # JSON {measure: R}: the draws averaged in measure.<name>, where R > 1
# the whole set's cost; JSON {measure: why NaN}; JSON {measure: method used}, for measures
# computed one of several ways (hessian_trace: exact_ggn or hutchinson); REPEATS; REMEASURED
MEASURING = ("measure_seconds", "nan_reasons", "measure_methods", REPEATS, REMEASURED)
STATUS = ("status", "error")  # ok / failed / diverged, and the error text
PROVENANCE = ("config", "versions", "device", "host", "started_at", "finished_at")
# when a run started and finished, and when `study measure` last rewrote it: timestamp[us, UTC];
# rows written before each was a timestamp hold ISO 8601 strings ("2026-01-02T03:04:05+00:00"),
# which `normalize_times` casts (on reading, and `study migrate` rewrites such rows)
TIMES = ("started_at", "finished_at", REMEASURED)
TIMESTAMP = pa.timestamp("us", tz="UTC")


def now() -> datetime:
    """Now, in UTC, to the second: a time column's value (stored as `TIMESTAMP`)."""
    return datetime.now(timezone.utc).replace(microsecond=0)

FIXED = IDENTITY + OUTCOMES + TRAINING + MEASURING + STATUS + PROVENANCE


def name_of(col: str) -> str:
    """The name without its schema prefix: ``measure.sharpness`` → ``sharpness``, ``hp.lr`` → ``lr``."""
    return next((col[len(p):] for p in PREFIXES if col.startswith(p)), col)


def stored_settings(row: dict) -> dict[str, str | None]:
    """name → settings hash (``measure_cfg.<name>``; None when absent) of every measure that
    ``row`` (a dict of columns) holds a value of (a NaN value counts: it was computed)."""
    return {col[len(MEASURE):]: row.get(cfg_col(col[len(MEASURE):]))
            for col, v in row.items() if is_measure(col) and v is not None}


def arrow_type(col: str, value) -> pa.DataType:
    """A row column's Arrow type: measures, their sds and seconds float64 (NaN and integers alike),
    artifacts list<float64>, settings hashes string, the others by the Python value (bool, int64,
    float64, datetime timestamp[us, UTC], else string)."""
    if col.startswith(MEASURE_CFG):
        return pa.string()
    if col.startswith((MEASURE, MEASURE_SD, SECONDS)):
        return pa.float64()
    if col.startswith(ARTIFACT):
        return pa.list_(pa.float64())
    if isinstance(value, datetime):
        return TIMESTAMP
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def normalize_times(table: pa.Table) -> pa.Table:
    """``table`` with its `TIMES` columns as `TIMESTAMP`: a row written before they were
    timestamps holds ISO 8601 strings, cast here (an unparsable string becomes null), so that
    old and new rows stack. ``table`` itself when every time column already is one."""
    import pyarrow.compute as pc

    for col in TIMES:
        if col not in table.column_names or table.schema.field(col).type == TIMESTAMP:
            continue
        arr = table[col]
        if pa.types.is_timestamp(arr.type):
            arr = arr.cast(TIMESTAMP)
        else:  # strings (or nulls): "…+00:00" parses with %z; anything else is null
            text = arr.cast(pa.string())
            arr = pc.strptime(pc.replace_substring_regex(text, r"([+-]\d\d):(\d\d)$", r"\1\2"),
                              format="%Y-%m-%dT%H:%M:%S%z", unit="us", error_is_null=True).cast(TIMESTAMP)
        table = table.set_column(table.column_names.index(col), col, arr)
    return table


# ------------------------------------------------------------ stacking rows


class RowsError(ValueError):
    """Stored rows that cannot be stacked as they are (a column of the wrong type, one run id
    stored with different values); the message names the files and what to do."""


def _same(a, b) -> bool:
    """Equality of two row values, NaN equal to NaN, lists and dicts compared elementwise."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _unifies(a: pa.DataType, b: pa.DataType) -> bool:
    try:
        pa.unify_schemas([pa.schema([("c", a)]), pa.schema([("c", b)])], promote_options="permissive")
        return True
    except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False


def mistyped(tables: list[pa.Table], sources: list[str]) -> list[tuple[int, str]]:
    """(index, reason) of each table holding a column of a type that the type most tables give it
    cannot hold (``hp.lr`` text where the others have numbers): what `pa.concat_tables` refuses.
    Between as many files of each type, text is the wrong one."""
    from collections import Counter
    types: dict[str, Counter] = {}
    for t in tables:
        for f in t.schema:
            if not pa.types.is_null(f.type):
                types.setdefault(f.name, Counter())[f.type] += 1
    bad: dict[int, str] = {}
    for col, counts in types.items():
        if len(counts) < 2:
            continue
        # the most files' type; on a tie, not text (a number written as text is the usual slip)
        usual = max(counts, key=lambda k: (counts[k], not (pa.types.is_string(k) or pa.types.is_large_string(k))))
        for i, t in enumerate(tables):
            if i in bad or col not in t.column_names:
                continue
            kind = t.schema.field(col).type
            if not pa.types.is_null(kind) and not _unifies(usual, kind):
                bad[i] = (f"{sources[i]}: column {col} is {kind} where the other rows have {usual}")
    return sorted(bad.items())


def unique_runs(table: pa.Table, sources: list[str]) -> tuple[pa.Table, list[str]]:
    """``table`` with each run counted once: within a study (the ``study`` column, when there is
    one) a run id stored more than once with the same values keeps its first row (and a note
    naming the files, ``sources[i]`` being row i's); stored with different values, RowsError
    naming them. Rows without a run id are kept as they are."""
    if "run_id" not in table.column_names:
        return table, []
    ids = table["run_id"].to_pylist()
    studies = table["study"].to_pylist() if "study" in table.column_names else [None] * len(ids)
    first: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(studies, ids)):
        if key[1] is not None:
            first.setdefault(key, []).append(i)
    drop, notes = set(), []
    for (study, rid), rows in first.items():
        if len(rows) < 2:
            continue
        files = ", ".join(dict.fromkeys(sources[i] for i in rows))
        kept = table.slice(rows[0], 1).to_pylist()[0]
        for i in rows[1:]:
            if not _same(kept, table.slice(i, 1).to_pylist()[0]):
                raise RowsError(f"run {rid} is stored twice with different values ({files}): one of "
                                "them is not that run's row; delete the wrong file")
        drop.update(rows[1:])
        notes.append(f"run {rid} is stored {len(rows)} times ({files}): counted once")
    if not drop:
        return table, []
    keep = [i for i in range(table.num_rows) if i not in drop]
    return table.take(pa.array(keep, pa.int64())), notes


def stack_rows(tables: list[pa.Table], sources: list[str], *, skip: bool = False
               ) -> tuple[pa.Table, list[str]]:
    """Run rows read from ``sources`` (one table each, in order) stacked as one table, with
    differing column sets unified (missing → null, numbers widened), and notes. A table with a
    column of a type the others' cannot hold (`mistyped`) is RowsError naming its file, or with
    ``skip`` left out with a note; each run counted once (`unique_runs`)."""
    notes = []
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        bad = mistyped(tables, sources)
        if not bad:
            raise
        if not skip:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise RowsError(f"{bad[0][1]}{more}: rewrite or delete that file (`study run` runs a deleted "
                            "network again), or leave it out with --skip-corrupt") from None
        drop = {i for i, _ in bad}
        notes += [f"left out {why}" for _, why in bad]
        tables = [t for i, t in enumerate(tables) if i not in drop]
        sources = [s for i, s in enumerate(sources) if i not in drop]
        table = pa.concat_tables(tables, promote_options="permissive")
    rows = [s for t, s in zip(tables, sources) for _ in range(t.num_rows)]
    table, more = unique_runs(table, rows)
    return table, notes + more


# ---------------------------------------------------------------- artifacts


@dataclass(frozen=True)
class Artifact:
    """What the list column ``artifact.<name>`` holds. ``shape``: its axes, row-major, flattened;
    ``x``: the artifact holding the x values of the last axis. ``kind``: ``"x"``, such x values;
    ``"spectral"``, weights of a discrete measure at the nodes ``x``; ``"curves"``, one curve
    over ``x`` per index of the first axis; ``"surface"``, a value at every point of the grid
    ``x`` × ``x`` (rows: the first direction); ``"series"``, one value per index of its only
    axis (no ``x``); ``"parts"``, named figures, one per entry of ``labels``, in that order.
    ``grid``: fixed x values, in units of ``grid_unit``."""

    name: str
    meaning: str
    shape: tuple[str, ...]
    kind: str = "x"
    x: str | None = None
    grid: tuple[float, ...] | None = None
    grid_unit: str | None = None
    labels: tuple[str, ...] = ()

    @property
    def column(self) -> str:
        return ARTIFACT + self.name


ARTIFACTS = {a.name: a for a in (
    Artifact("hessian_density_nodes", "Ritz values θ_i of the training-loss Hessian (stochastic Lanczos "
             "quadrature; every probe's, sorted)", ("probe × Lanczos step",)),
    Artifact("hessian_density_weights", "Gauss-quadrature weights w_i at the nodes (averaged over probes, "
             "summing to 1): density ≈ Σ_i w_i δ(λ − θ_i)", ("probe × Lanczos step",), "spectral",
             x="hessian_density_nodes"),
    Artifact("filter_sharpness_t", "steps t along each filter-normalised direction δ_k", ("T",),
             grid=(-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0), grid_unit="filter_radius r"),
    Artifact("filter_sharpness_curves", "training loss L(w + t·δ_k) along K = filter_directions random "
             "filter-normalised directions (Li et al. 2018)", ("K", "T"), "curves", x="filter_sharpness_t"),
    # optional: written only with the knob loss_surface_points = N > 0 (by filter_sharpness)
    Artifact("loss_surface_t", "steps a (and b) along each of the loss surface's two directions: N "
             "evenly spaced from the least to the largest filter_sharpness_t", ("N",)),
    Artifact("loss_surface", "training loss L(w + a·δ₁ + b·δ₂) over two random filter-normalised "
             "directions (Li et al. 2018's 2-D surface), a on rows, b on columns",
             ("N (a, along δ₁)", "N (b, along δ₂)"), "surface", x="loss_surface_t"),
    Artifact("train_loss_curve", "mean training cross-entropy of each epoch's mini-batches, in train "
             "mode, as the optimiser saw them (TrainLog.epoch_losses)", ("epoch",), "series"),
    Artifact("pacbayes_optimized_parts", "what bounds pacbayes_optimized_bound: KL(Q‖P), the prior "
             "variance λ and its grid index j, ê_m (the mean training error of the m draws of Q), ê⁺ "
             "(Langford & Caruana's bound on Q's training error), the slack ê⁺ − ê_m, Q's mean test "
             "error over the same draws (NaN without a test set), n, m, the last surrogate value",
             ("part",), "parts", labels=("kl", "lambda", "j", "e_m", "e_plus", "slack", "test_error", "n", "m",
                                         "surrogate")),
)}


# ------------------------------------------------------------------ ranking


@dataclass(frozen=True)
class SortKey:
    """A key of an order. A descending key is a score (NaN counts as missing); missing comes last."""

    column: str
    descending: bool = False
    absolute: bool = False


def ranking_order(by: str = "cmi", *, per_dataset: bool = False) -> tuple[SortKey, ...]:
    """The ranking table's order: the highest ``by`` first (``cmi``: the information kept about
    the gap once the hyperparameters are controlled for), ties by |τ| descending, then by name;
    ``by="tau"``: by |τ| alone, ties keeping their order. ``per_dataset``: by dataset first."""
    tau = SortKey("tau", True, True)
    keys = (tau,) if by == "tau" else (SortKey(by, True), tau, SortKey("measure"))
    return ((SortKey("dataset"),) if per_dataset else ()) + keys


# -------------------------------------------------------------- atomic write

TMP_PREFIX = ".tmp-"  # writers' temporary files: hidden from readers, removed by Store.clean_tmp


def write_atomic(path: str, data: bytes, fs=None) -> str:
    """Write ``data`` to ``path`` whole or not at all; returns ``path``. ``fs``: a pyarrow.fs
    filesystem, or None for a local path or a URI. Locally a hidden temporary file in the same
    folder (created if need be), fsynced and renamed; on an object store one upload of the whole
    buffer (pyarrow may make it multipart, which also appears whole or not at all)."""
    import pyarrow.fs as pafs

    if fs is None and "://" in path:
        fs, path = pafs.FileSystem.from_uri(path)
    if fs is not None and not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_output_stream(path) as f:
            f.write(data)
        return path
    folder, name = os.path.split(path)
    os.makedirs(folder or ".", exist_ok=True)
    tmp = os.path.join(folder, f"{TMP_PREFIX}{name}-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
