"""Read a study's runs into one polars table, and select the population.

Sources (DESIGN.md, "Storage"): a runs folder ``…/<study>/runs`` (one
Parquet row per run), a study folder holding ``runs/`` and/or
``runs.parquet``, a consolidated Parquet file, or any of these as a URI
that ``pyarrow.fs`` opens (``s3://…``, ``gs://…``, ``file://…``).

Choices:

- A study folder with both: the consolidated ``runs.parquet`` is read when
  it is at least as new as every run file (with a warning when it holds
  another number of rows than there are run files: some deleted or copied in
  since), otherwise the ``runs/`` folder (with a warning that the consolidated
  file is stale).
- In a runs folder only ``*.parquet`` files whose names do not start with
  ``.`` are rows (writers' temporary files are hidden).
- Rows with differing column sets are stacked diagonally (a missing column
  is null; numeric types are widened). A file with a column of a type the
  others cannot hold (text where numbers are) is an error naming it, or left
  out with ``on_corrupt="skip"``.
- Within a study a run id counts once: identical copies (a copied file, the
  same study given twice) are dropped with a warning naming the files; copies
  with different values are an error naming them (`study.schema.unique_runs`).
- A corrupt or truncated Parquet file is an error naming the file
  (:class:`RunsError`); ``on_corrupt="skip"`` leaves such files out with a
  warning that names each one. Never silently.

Settings (DESIGN.md, ``measure_cfg.<name>``): a measure column is ranked
only when its rows share one settings hash (`check_settings`); a row
without the hash (written before it existed) counts as the setting
``unknown``, so old outputs rank on their own but not mixed with new rows.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.schema import (
    RowsError,
    cfg_col,
    hp_col,
    is_hp,
    is_measure,
    name_of,
    normalize_times,
    ranking_order,
    stack_rows,
    unique_runs,
)

UNKNOWN = "unknown"  # the settings of a row written before measure_cfg.<name> existed


class RunsError(ValueError):
    """The runs cannot be read or analysed; the message says why and what to do."""


class MixedSettingsError(RunsError):
    """A measure column holds values computed under different settings."""


def _open(source: str) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path, how to name it) for a local path or a URI."""
    if "://" not in source:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(source)), source
    try:
        fs, path = pafs.FileSystem.from_uri(source)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types here
        raise RunsError(f"cannot open {source!r}: {e}") from None
    return fs, path, source


def _run_files(fs: pafs.FileSystem, folder: str) -> list[pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return sorted((i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                   and not i.base_name.startswith(".")), key=lambda i: i.path)


def _read_one(fs: pafs.FileSystem, path: str) -> pa.Table:
    return normalize_times(pq.read_table(path, filesystem=fs))  # old rows: ISO strings


def _read_files(fs: pafs.FileSystem, paths: list[str], name: str, on_corrupt: str) -> pa.Table:
    def attempt(p: str):
        try:
            return _read_one(fs, p)
        except Exception as e:  # noqa: BLE001 - any failure to decode is "corrupt"
            return e

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(paths)))) as pool:
        results = list(pool.map(attempt, paths))
    bad = [(p, r) for p, r in zip(paths, results) if isinstance(r, Exception)]
    if bad:
        listing = "; ".join(f"{p}: {type(e).__name__}: {e}" for p, e in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        if on_corrupt != "skip":
            raise RunsError(f"cannot read {len(bad)} run file(s) under {name}: {listing}{more}. "
                            "Delete or rerun those runs, or skip them (on_corrupt='skip', --skip-corrupt)")
        warnings.warn(f"skipped {len(bad)} unreadable run file(s) under {name}: {listing}{more}", stacklevel=3)
    good = [(p, r) for p, r in zip(paths, results) if not isinstance(r, Exception)]
    if not good:
        raise RunsError(f"no readable run rows under {name}")
    try:
        table, notes = stack_rows([r for _, r in good], [p for p, _ in good], skip=on_corrupt == "skip")
    except RowsError as e:
        raise RunsError(str(e)) from None
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return table


def _read_consolidated(fs: pafs.FileSystem, path: str, name: str, run_files: int = 0) -> pa.Table:
    """A consolidated runs.parquet; ``run_files``: how many run files its study folder has (0:
    none, or not beside it), with a warning when the file holds another number of rows."""
    try:
        table = _read_one(fs, path)
    except Exception as e:  # noqa: BLE001
        raise RunsError(f"cannot read {name}: {type(e).__name__}: {e}. Consolidate the study again "
                        "or point at its runs/ folder") from None
    if run_files and table.num_rows != run_files:
        folder = name.removesuffix("/runs.parquet")
        warnings.warn(f"{name} holds {table.num_rows} rows where {folder}/runs/ has {run_files} run files "
                      "(some deleted or copied in since it was written); reading runs.parquet: consolidate "
                      f"the study again, or read {folder}/runs/", stacklevel=4)
    try:
        table, notes = unique_runs(table, [name] * table.num_rows)
    except RowsError as e:
        raise RunsError(str(e)) from None
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return table


def read_runs(source: str | os.PathLike, *, on_corrupt: str = "error") -> pl.DataFrame:
    """Every stored row of ``source`` (no filtering), as a polars DataFrame."""
    source = os.fspath(source)
    if on_corrupt not in ("error", "skip"):
        raise ValueError(f"on_corrupt must be 'error' or 'skip', got {on_corrupt!r}")
    fs, path, name = _open(source)
    try:
        return _read_source(fs, path, name, on_corrupt)
    except OSError as e:  # an unreachable object store, a folder we may not read, …
        raise RunsError(f"cannot read {name}: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def _read_source(fs: pafs.FileSystem, path: str, name: str, on_corrupt: str) -> pl.DataFrame:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise RunsError(f"no such runs folder or file: {name}")
    if info.type == pafs.FileType.File:
        table = _read_consolidated(fs, path, name)
    else:
        base = path.rstrip("/")
        runs_dir = fs.get_file_info(f"{base}/runs")
        consolidated = fs.get_file_info(f"{base}/runs.parquet")
        if runs_dir.type == pafs.FileType.Directory:
            files = _run_files(fs, runs_dir.path)
            newer = consolidated.type == pafs.FileType.File and (
                not files or all(f.mtime is not None and consolidated.mtime is not None
                                 and f.mtime <= consolidated.mtime for f in files))
            if newer:
                table = _read_consolidated(fs, consolidated.path, f"{name}/runs.parquet", len(files))
            else:
                if consolidated.type == pafs.FileType.File:
                    warnings.warn(f"{name}/runs.parquet is older than some run files; reading {name}/runs/ "
                                  "instead (consolidate the study again for faster reading)", stacklevel=2)
                if not files:
                    raise RunsError(f"no run files (*.parquet) in {name}/runs")
                table = _read_files(fs, [f.path for f in files], f"{name}/runs", on_corrupt)
        elif consolidated.type == pafs.FileType.File:
            table = _read_consolidated(fs, consolidated.path, f"{name}/runs.parquet")
        else:
            files = _run_files(fs, base)
            if not files:
                raise RunsError(f"no run files (*.parquet) in {name}: give a study's runs folder, "
                                "its study folder or a consolidated runs.parquet")
            table = _read_files(fs, [f.path for f in files], name, on_corrupt)
    if table.num_rows == 0:
        raise RunsError(f"{name} holds no rows")
    return pl.from_arrow(table)


def checked(df: pl.DataFrame, n_boot: int = 0) -> pl.DataFrame:
    """The runs a ranking or the claims are computed from, checked: RunsError for a table with
    no rows or no ``gap`` column and for a negative bootstrap count; sorted by ``run_id`` (a
    canonical order: the bootstrap resamples by position)."""
    if df.height == 0:
        raise RunsError("the runs table has no rows")
    if n_boot < 0:
        raise RunsError(f"the bootstrap count must be 0 or more, got {n_boot}")
    if "gap" not in df.columns:
        raise RunsError("the runs table has no gap column (train_acc − test_acc)")
    return df.sort("run_id", nulls_last=True, maintain_order=True) if "run_id" in df.columns else df


def population(df: pl.DataFrame, include_unconverged: bool = False, include_failed: bool = False
               ) -> pl.DataFrame:
    """The runs that enter the analysis: ``status == "ok"`` and ``converged``, unless admitted.

    A missing ``status`` column counts as "ok", a missing ``converged``
    column as converged; a null ``converged`` as not converged.
    """
    cond = pl.lit(True)
    if not include_failed and "status" in df.columns:
        cond = cond & (pl.col("status") == "ok").fill_null(False)
    if not include_unconverged and "converged" in df.columns:
        cond = cond & pl.col("converged").cast(pl.Boolean, strict=False).fill_null(False)
    return df.filter(cond)


CATEGORICAL = ("dataset", "model", "status")
JSON_COLUMNS = ("config", "versions", "nan_reasons")  # JSON objects, stored as strings


def decode(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with `CATEGORICAL` columns as polars Categoricals and the `JSON_COLUMNS` decoded into
    structs (every row's keys, a key a row lacks null; an empty or null string a null struct). A
    JSON column that does not decode (not JSON, or objects whose keys no struct holds) stays a
    string. Columns already decoded are left as they are."""
    df = df.with_columns(pl.col(c).cast(pl.Categorical) for c in CATEGORICAL
                         if c in df.columns and df.schema[c] == pl.String)
    for c in JSON_COLUMNS:
        if c not in df.columns or df.schema[c] != pl.String:
            continue
        text = df[c].replace("", None)
        if text.null_count() == df.height:
            continue
        try:
            decoded = text.str.json_decode(infer_schema_length=None)
        except Exception:  # noqa: BLE001 - polars raises several types; the string is kept
            continue
        if isinstance(decoded.dtype, pl.Struct) and decoded.dtype.fields:
            df = df.with_columns(decoded.alias(c))
    return df


def load_runs(source: str | os.PathLike, *, include_unconverged: bool = False, include_failed: bool = False,
              on_corrupt: str = "error", decoded: bool = True) -> pl.DataFrame:
    """The population of ``source`` (module docstring): ok and converged rows unless admitted;
    ``decoded``: `decode` (categoricals, JSON columns as structs), else every column as stored."""
    df = population(read_runs(source, on_corrupt=on_corrupt), include_unconverged, include_failed)
    return decode(df) if decoded else df


def measure_columns(df: pl.DataFrame) -> list[str]:
    """The ``measure.*`` columns that hold numbers, in table order."""
    return [c for c in df.columns if is_measure(c) and (df.schema[c].is_numeric() or df.schema[c] == pl.Null)]


def axis_columns(df: pl.DataFrame) -> list[str]:
    """The ``hp.*`` columns (the axes of the study grid), in table order."""
    return [c for c in df.columns if is_hp(c)]


def sort_ranking(table: pl.DataFrame, by: str = "cmi", *, per_dataset: bool = False) -> pl.DataFrame:
    """A ranking table in the order of ``study.schema.ranking_order`` (keys it lacks are skipped;
    a stable sort)."""
    keys = [k for k in ranking_order(by, per_dataset=per_dataset) if k.column in table.columns]
    score = [pl.col(k.column).cast(pl.Float64).fill_nan(None) for k in keys]  # a score's NaN is missing
    exprs = [(s.abs() if k.absolute else s) if k.descending else pl.col(k.column) for k, s in zip(keys, score)]
    return table.sort(exprs, descending=[k.descending for k in keys], nulls_last=True,
                      maintain_order=True) if keys else table


def split_datasets(df: pl.DataFrame, dataset_axis: bool = False) -> list[tuple[str, pl.DataFrame]]:
    """One ``(dataset, rows)`` per dataset, or a single table when the dataset is an axis.

    The dataset is an axis when ``dataset_axis`` is set (the ``dataset``
    column is then copied to ``hp.dataset``) or the table has ``hp.dataset``;
    that single table's name joins the dataset names with ``+``. Rows
    without a dataset are named ``unknown``.
    """
    if "dataset" not in df.columns:
        df = df.with_columns(pl.lit("unknown").alias("dataset"))
    df = df.with_columns(pl.col("dataset").cast(pl.String).fill_null("unknown"))
    names = sorted(df["dataset"].unique().to_list())
    if dataset_axis or hp_col("dataset") in df.columns:
        if hp_col("dataset") not in df.columns:
            df = df.with_columns(pl.col("dataset").alias(hp_col("dataset")))
        return [("+".join(names), df)]
    return [(name, df.filter(pl.col("dataset") == name)) for name in names]


def settings_counts(df: pl.DataFrame, measure: str) -> dict[str, int]:
    """How many rows with a finite value in the measure column ``measure`` (``measure.<name>``)
    carry each settings hash, ``UNKNOWN`` for a row without one; most rows first."""
    if measure not in df.columns:
        return {}
    cfg = cfg_col(name_of(measure))
    h = df[cfg].cast(pl.String) if cfg in df.columns else pl.Series(cfg, [None] * df.height, pl.String)
    finite = df[measure].cast(pl.Float64, strict=False).is_finite().fill_null(False)
    counts = h.filter(finite).fill_null(UNKNOWN).value_counts(sort=True, name="n")
    return dict(sorted(zip(counts[cfg].to_list(), counts["n"].to_list()), key=lambda kv: (-kv[1], kv[0])))


def mixed_settings(df: pl.DataFrame, measures: list[str] | None = None) -> dict[str, dict[str, int]]:
    """The measure columns (default: all of ``df``'s) whose finite values come from more than one
    settings hash, each with `settings_counts`."""
    out = {}
    for m in measure_columns(df) if measures is None else measures:
        counts = settings_counts(df, m)
        if len(counts) > 1:
            out[m] = counts
    return out


def check_settings(df: pl.DataFrame, measures: list[str] | None = None, *, allow_mixed: bool = False,
                   dataset_axis: bool = False) -> None:
    """Raise :class:`MixedSettingsError` when a measure column of a table that is ranked together
    (each dataset, or all with ``dataset_axis``; `split_datasets`) mixes settings, naming how many
    rows have which hash; ``allow_mixed`` skips the check."""
    if allow_mixed:
        return
    parts = split_datasets(df, dataset_axis)
    found = []
    for name, part in parts:
        where = f"dataset {name}: " if len(parts) > 1 else ""
        for m, counts in mixed_settings(part, measures).items():
            rows = ", ".join(f"{n} row{'s' if n != 1 else ''} with {h}" for h, n in counts.items())
            found.append(f"{where}{m} mixes settings: {rows}")
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise MixedSettingsError("; ".join(found[:3]) + more + "; recompute the stale rows with "
                                 "`study measure STUDY.toml --stale`, or pass --allow-mixed")
