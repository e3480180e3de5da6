"""The row schema of a run (DESIGN.md, "Row schema"), named once for `study` and `analysis`.

It holds the column names (fixed ones and the dotted prefixes), their Arrow
types, what each ``artifact.*`` list column means and how it is shaped, the
order of the ranking table, and the one atomic write that rows, the
consolidated file, the ranking table and the report go through.

Imports only the standard library and pyarrow, never torch, Ray or polars:
`analysis` reads it on machines that have none of the training stack.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pyarrow as pa

# ------------------------------------------------------------------ columns

MEASURE = "measure."    # measure.<name>: float64, NaN where not defined (nan_reasons says why)
HP = "hp."              # hp.<axis>: one column per grid axis, typed by its values
SECONDS = "seconds."    # seconds.<name>: what a measure cost (shared work charged to its group)
ARTIFACT = "artifact."  # artifact.<name>: list<float64> for plots, described in ARTIFACTS
PREFIXES = (MEASURE, HP, SECONDS, ARTIFACT)

IDENTITY = ("run_id", "study", "dataset", "model", "seed")
OUTCOMES = ("train_acc", "test_acc", "train_loss", "test_loss", "gap", "loss_gap")  # gap = train − test acc
TRAINING = ("converged", "diverged", "steps", "epochs", "train_seconds", "n_train", "n_test")
MEASURING = ("measure_seconds", "nan_reasons")  # the whole set's cost; JSON {measure: why NaN}
STATUS = ("status", "error")  # ok / failed / diverged, and the error text
PROVENANCE = ("config", "versions", "device", "host", "started_at", "finished_at")
FIXED = IDENTITY + OUTCOMES + TRAINING + MEASURING + STATUS + PROVENANCE


def measure_col(name: str) -> str:
    return MEASURE + name


def hp_col(axis: str) -> str:
    return HP + axis


def seconds_col(name: str) -> str:
    return SECONDS + name


def artifact_col(name: str) -> str:
    return ARTIFACT + name


def name_of(col: str) -> str:
    """The name without its schema prefix: ``measure.sharpness`` → ``sharpness``, ``hp.lr`` → ``lr``."""
    for p in PREFIXES:
        if col.startswith(p):
            return col[len(p):]
    return col


def is_measure(col: str) -> bool:
    return col.startswith(MEASURE)


def is_hp(col: str) -> bool:
    return col.startswith(HP)


def is_seconds(col: str) -> bool:
    return col.startswith(SECONDS)


def is_artifact(col: str) -> bool:
    return col.startswith(ARTIFACT)


def is_declared(col: str) -> bool:
    """A fixed column or one under a schema prefix."""
    return col in FIXED or col.startswith(PREFIXES)


def arrow_type(col: str, value) -> pa.DataType:
    """The Arrow type of a row's column: measures and their seconds float64 (so NaN and
    integers stay one type), artifacts list<float64>; the others follow the Python value
    (bool, int64, float64; anything else, JSON text included, a string)."""
    if col.startswith((MEASURE, SECONDS)):
        return pa.float64()
    if col.startswith(ARTIFACT):
        return pa.list_(pa.float64())
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


# ---------------------------------------------------------------- artifacts


@dataclass(frozen=True)
class Artifact:
    """What the list column ``artifact.<name>`` holds.

    ``shape`` names its axes, row-major, flattened into the list. ``x`` is the
    artifact that holds the x values of the last axis (None for such an x list
    itself). ``kind`` says how to draw it: ``"x"``, the x values of another;
    ``"spectral"``, the weights of a discrete measure at the nodes ``x``;
    ``"curves"``, one curve over ``x`` per index of the leading axis.
    ``grid``: the x values when they are fixed, in units of ``grid_unit``.
    """

    name: str
    meaning: str
    shape: tuple[str, ...]
    kind: str = "x"
    x: str | None = None
    grid: tuple[float, ...] | None = None
    grid_unit: str | None = None

    @property
    def column(self) -> str:
        return ARTIFACT + self.name


ARTIFACTS = {a.name: a for a in (
    Artifact("hessian_density_nodes",
             "Ritz values θ_i of the training-loss Hessian from stochastic Lanczos quadrature "
             "(every probe's tridiagonal, concatenated and sorted): the nodes of its spectral density",
             ("probe × lanczos step",)),
    Artifact("hessian_density_weights",
             "Gauss-quadrature weights w_i at hessian_density_nodes (squared first Ritz-vector "
             "components, averaged over probes; they sum to 1): density ≈ Σ_i w_i δ(λ − θ_i)",
             ("probe × lanczos step",), kind="spectral", x="hessian_density_nodes"),
    Artifact("filter_sharpness_t",
             "steps t along each filter-normalised direction δ_k: r · grid, r = filter_radius",
             ("T",), grid=(-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0), grid_unit="filter_radius r"),
    Artifact("filter_sharpness_curves",
             "training loss L(w + t·δ_k) along K = filter_directions random filter-normalised "
             "directions (Li et al. 2018); t = 0 is L(w)",
             ("K", "T"), kind="curves", x="filter_sharpness_t"),
)}


def artifacts_of_kind(kind: str) -> list[Artifact]:
    return [a for a in ARTIFACTS.values() if a.kind == kind]


# ------------------------------------------------------------------ ranking


@dataclass(frozen=True)
class SortKey:
    """One key of an order; a descending key is a score, where NaN counts as missing.
    Missing values come last."""

    column: str
    descending: bool = False
    absolute: bool = False


def ranking_order(by: str = "cmi", *, per_dataset: bool = False) -> tuple[SortKey, ...]:
    """The order of the ranking table: the highest ``by`` first (default ``cmi``, the
    information kept about the gap once the hyperparameters are controlled for), ties by
    |τ| descending, then by measure name. ``by="tau"``: by |τ| alone, ties keeping the
    order they had (a stable sort). With ``per_dataset``, by dataset first."""
    tau = SortKey("tau", True, True)
    keys = (tau,) if by == "tau" else (SortKey(by, True), tau, SortKey("measure"))
    return ((SortKey("dataset"),) if per_dataset else ()) + keys


# -------------------------------------------------------------- atomic write

TMP_PREFIX = ".tmp-"  # writers' temporary files: hidden from readers, removed by Store.clean_tmp


def write_atomic(path: str, data: bytes, fs=None) -> str:
    """Write ``data`` to ``path`` whole or not at all; returns ``path``.

    ``fs`` is a ``pyarrow.fs`` filesystem, None for a local path. Locally the
    bytes go to a hidden temporary file in the same folder (created if need
    be), are fsynced, and the file is renamed over ``path``. On an object
    store a single upload of the whole buffer (pyarrow may split it into a
    multipart upload, which also appears whole or not at all).
    """
    import pyarrow.fs as pafs

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
