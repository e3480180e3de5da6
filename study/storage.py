"""Where a study's rows live: ``OUT/<study>/runs/<run_id>.parquet``, one row each.

``OUT`` is a local path or any URI that `pyarrow.fs` opens (``s3://``,
``gs://``, ``file://``); credentials come from the usual environment. A row
is written whole or not at all: locally to a hidden temporary name and
renamed, on object stores as one upload of the whole file (pyarrow may use a
multipart upload, which also appears whole or not at all). Consolidation
writes ``OUT/<study>/runs.parquet`` the same way.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .schema import TMP_PREFIX, arrow_type, is_artifact, write_atomic


class StorageError(RuntimeError):
    """The output location cannot be used; the message says why."""


def open_fs(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or a pyarrow.fs URI."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:
        raise StorageError(f"cannot open output {uri!r}: {e}") from None


def row_table(row: dict[str, Any]) -> pa.Table:
    """One row as an Arrow table with stable types (measures float64, NaN kept)."""
    cols = {}
    for k, v in row.items():
        if isinstance(v, (dict, list)) and not is_artifact(k):
            v = json.dumps(v, sort_keys=True, default=str)
        cols[k] = pa.array([v], type=arrow_type(k, v))
    return pa.table(cols)


class Store:
    """The runs of one study under ``out``."""

    def __init__(self, out: str, study: str):
        self.out = out
        self.study = study
        self.fs, base = open_fs(out)
        self.base = f"{base.rstrip('/')}/{study}"
        self.runs_dir = f"{self.base}/runs"
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def uri(self, path: str) -> str:
        """The URI of a path of this store, keeping the options of ``out``
        (``?endpoint_override=…&scheme=…``) so that the URI opens the same store."""
        if self.local:
            return path
        scheme, rest = self.out.split("://", 1)
        query = rest.partition("?")[2]
        return f"{scheme}://{path}" + (f"?{query}" if query else "")

    def run_path(self, run_id: str) -> str:
        return f"{self.runs_dir}/{run_id}.parquet"

    def check_writable(self) -> None:
        """Create the runs folder and write, read and delete a probe file."""
        probe = f"{self.runs_dir}/{TMP_PREFIX}probe-{uuid.uuid4().hex}"
        try:
            self.fs.create_dir(self.runs_dir, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except Exception as e:
            raise StorageError(f"output {self.uri(self.runs_dir)} is not writable: {e}. "
                               "Give a writable path with --out or [study] out") from None

    def write_row(self, row: dict[str, Any]) -> str:
        """Write one run's row, atomically; returns its path."""
        buf = io.BytesIO()
        pq.write_table(row_table(row), buf)
        return write_atomic(self.run_path(row["run_id"]), buf.getvalue(), self.fs)

    def _run_files(self) -> list[pafs.FileInfo]:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.runs_dir, allow_not_found=True))
        except FileNotFoundError:
            return []
        return [i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                and not i.base_name.startswith(".")]

    def clean_tmp(self) -> int:
        """Remove temporary files left by writers that were killed (one driver per study)."""
        n = 0
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.runs_dir, allow_not_found=True))
        except FileNotFoundError:
            return 0
        for i in infos:
            if i.base_name.startswith(TMP_PREFIX):
                self.fs.delete_file(i.path)
                n += 1
        return n

    def statuses(self) -> dict[str, str]:
        """run_id → status of every stored run (unreadable files count as absent)."""
        files = self._run_files()
        if not files:
            return {}
        out = {}
        try:
            table = ds.dataset([f.path for f in files], filesystem=self.fs, format="parquet") \
                .to_table(columns=["run_id", "status"])
            out = dict(zip(table["run_id"].to_pylist(), table["status"].to_pylist()))
        except Exception:  # a corrupt file among them: read one by one
            for f in files:
                try:
                    t = pq.read_table(f.path, filesystem=self.fs, columns=["run_id", "status"])
                    out[t["run_id"][0].as_py()] = t["status"][0].as_py()
                except Exception:
                    continue
        return out

    def statuses_of(self, run_ids) -> dict[str, str]:
        """run_id → status for the given runs that are stored and readable."""
        out = {}
        for rid in run_ids:
            try:
                t = pq.read_table(self.run_path(rid), filesystem=self.fs, columns=["status"])
                out[rid] = t["status"][0].as_py()
            except Exception:  # absent or unreadable: not stored
                continue
        return out

    def read_all(self) -> pa.Table:
        """Every run row, with differing column sets unified (missing → null)."""
        tables = [pq.read_table(f.path, filesystem=self.fs) for f in self._run_files()]
        if not tables:
            raise StorageError(f"no run files under {self.uri(self.runs_dir)}")
        return pa.concat_tables(tables, promote_options="permissive")

    def consolidate(self) -> tuple[str, int]:
        """Write every run row to ``<study>/runs.parquet`` atomically; returns (path, rows)."""
        table = self.read_all()
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return self.uri(write_atomic(f"{self.base}/runs.parquet", buf.getvalue(), self.fs)), table.num_rows
