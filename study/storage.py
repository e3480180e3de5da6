"""Where a study's rows live: ``OUT/<study>/runs/<run_id>.parquet``, one row each, and
its networks: ``OUT/<study>/nets/<run_id>.safetensors``, the initial and final weights.

``OUT`` is a local path or any URI that `pyarrow.fs` opens (``s3://``,
``gs://``, ``file://``); credentials come from the usual environment. A row
is written whole or not at all: locally to a hidden temporary name and
renamed, on object stores as one upload of the whole file (pyarrow may use a
multipart upload, which also appears whole or not at all). Consolidation
writes ``OUT/<study>/runs.parquet`` the same way, and so are checkpoints.

A checkpoint is a safetensors file (tensors and a string table, no code run on
load): keys ``init/<name>`` and ``final/<name>`` for every entry of the state
dict (BatchNorm buffers included), metadata ``config`` (the run's spec JSON),
``train_log`` (its `TrainLog` as JSON), ``run_id`` (the run it belongs to) and
``digest`` (`tensor_digest` of its tensors). `Store.read_net` checks both: a file
renamed to another run's name, or changed after it was written, is a `CheckpointError`.
A checkpoint written before the run id and digest were stored loads unchecked by them
(`runner.load_network` still compares its ``config`` with the run).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import struct
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import SCHEMA_VERSION
from .errors import error_line
from .schema import TMP_PREFIX, RowsError, arrow_type, is_artifact, normalize_times, stack_rows, write_atomic

log = logging.getLogger("study.storage")


class StorageError(RuntimeError):
    """The output location cannot be used; the message says why."""


class WriteError(StorageError):
    """Writing to the output failed mid-study (read-only, full, credentials expired): the
    driver stops submitting (`jobs.run`)."""


class CheckpointError(StorageError):
    """A checkpoint is not the network of the run that names it (another run's, changed after
    it was written, or blown up); the message says which and why."""


def tensor_digest(tensors: dict) -> str:
    """SHA-256 (hex) of a dict of tensors: every key in sorted order with its dtype, shape and
    raw bytes; the same tensors give the same digest on any machine of the same byte order."""
    import torch
    h = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k].detach().to("cpu").contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class OldSchemaError(StorageError):
    """Rows stored under an older run-id schema; `study migrate` rewrites them."""


def config_schema(config: str | None) -> int | None:
    """The run-id schema of a row's ``config`` JSON (None when it has none)."""
    try:
        return int(json.loads(config)["schema"])
    except (TypeError, ValueError, KeyError):
        return None


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
        self.nets_dir = f"{self.base}/nets"
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

    def net_path(self, run_id: str) -> str:
        return f"{self.nets_dir}/{run_id}.safetensors"

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
        return self.write_row_table(row_table(row))

    def write_row_table(self, table: pa.Table) -> str:
        """Write a one-row table as its run's row (named by its ``run_id``), atomically."""
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return write_atomic(self.run_path(table["run_id"][0].as_py()), buf.getvalue(), self.fs)

    def write_net(self, run_id: str, init_state: dict, final_state: dict, meta: dict[str, str]) -> str:
        """Write a run's initial and final state dicts and ``meta`` (str → str) as one
        safetensors file, atomically, with the metadata ``run_id`` and ``digest`` added (module
        docstring); returns its path."""
        from safetensors.torch import save
        tensors = {f"{tag}/{k}": v.detach().to("cpu").contiguous().clone()
                   for tag, state in (("init", init_state), ("final", final_state))
                   for k, v in state.items()}
        meta = {**meta, "run_id": run_id, "digest": tensor_digest(tensors)}
        return write_atomic(self.net_path(run_id), save(tensors, metadata=meta), self.fs)

    def read_net(self, run_id: str, verify: bool = True) -> tuple[dict, dict, dict[str, str]]:
        """(initial state dict, final state dict, metadata) of a stored run, on the CPU.
        ``verify``: `CheckpointError` when the file names another run or its tensors do not
        match its digest (either checked only when the file carries it)."""
        from safetensors.torch import load
        where = self.uri(self.net_path(run_id))
        try:
            with self.fs.open_input_stream(self.net_path(run_id)) as f:
                data = f.read()
        except FileNotFoundError:
            raise StorageError(f"no checkpoint {where}: it was deleted, or the run was stored with "
                               "[study] keep_networks = false or before checkpoints existed") from None
        n, = struct.unpack("<Q", data[:8])  # safetensors: u64 header size, then the JSON header
        meta = json.loads(data[8:8 + n]).get("__metadata__", {})
        tensors = load(data)
        if verify and meta.get("run_id", run_id) != run_id:
            raise CheckpointError(f"{where} is not the checkpoint of run {run_id}: it holds run "
                                  f"{meta['run_id']} (files renamed or copied?); put each network "
                                  "back under its own run id, or delete the file and rerun that network")
        if verify and "digest" in meta and tensor_digest(tensors) != meta["digest"]:
            raise CheckpointError(f"{where}: its tensors do not match their digest (the file was "
                                  "changed after it was written); delete it and rerun that network")
        state = {"init": {}, "final": {}}
        for key, v in tensors.items():
            tag, name = key.split("/", 1)
            state[tag][name] = v
        return state["init"], state["final"], meta

    def has_net(self, run_id: str) -> bool:
        return self.fs.get_file_info(self.net_path(run_id)).type == pafs.FileType.File

    def _run_files(self) -> list[pafs.FileInfo]:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.runs_dir, allow_not_found=True))
        except FileNotFoundError:
            return []
        return [i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                and not i.base_name.startswith(".")]

    def clean_tmp(self, older_than: float) -> int:
        """Remove temporary files left by writers that were killed: those last modified more
        than ``older_than`` seconds ago (`lease.LEASE_TIMEOUT_S`), never a live writer's."""
        n = 0
        cutoff = time.time() - older_than
        for folder in (self.runs_dir, self.nets_dir):
            try:
                infos = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
            except FileNotFoundError:
                continue
            for i in infos:
                if (i.base_name.startswith(TMP_PREFIX) and i.mtime is not None
                        and i.mtime.timestamp() < cutoff):
                    try:
                        self.fs.delete_file(i.path)
                    except FileNotFoundError:  # renamed or removed meanwhile by its writer
                        continue
                    n += 1
        return n

    def run_files(self) -> list[str]:
        """Paths of the stored run files."""
        return [f.path for f in self._run_files()]

    def old_schema_rows(self) -> int:
        """How many stored rows were written under an older run-id schema (their ``config``
        says so); unreadable files count as none."""
        files = self._run_files()
        if not files:
            return 0
        try:
            configs = ds.dataset([f.path for f in files], filesystem=self.fs, format="parquet") \
                .to_table(columns=["config"])["config"].to_pylist()
        except Exception:  # a corrupt file or one without a config among them: one by one
            configs = []
            for f in files:
                try:
                    configs.append(pq.read_table(f.path, filesystem=self.fs, columns=["config"])["config"][0].as_py())
                except Exception:
                    continue
        return sum(1 for c in configs if (config_schema(c) or SCHEMA_VERSION) < SCHEMA_VERSION)

    def check_schema(self, study_file: str = "STUDY.toml") -> None:
        """Raise OldSchemaError when rows of an older run-id schema are stored."""
        n = self.old_schema_rows()
        if n:
            raise OldSchemaError(
                f"{n} stored row{'s' if n > 1 else ''} in {self.uri(self.runs_dir)} "
                f"{'were' if n > 1 else 'was'} written under an older run-id schema (whose ids also "
                f"hashed the measures; schema {SCHEMA_VERSION} names the network only). Nothing was "
                f"run; run `study migrate {study_file}` to rewrite them under their new ids")

    def statuses(self) -> dict[str, str]:
        """run_id → status of every stored run (unreadable files count as absent)."""
        return self.scan()[0]

    def scan(self, outcomes: bool = False) -> tuple[dict[str, str], list[str]]:
        """(run_id → status of every readable run file, paths of the unreadable ones). With
        ``outcomes``, the outcome instead of the status: ``unconverged`` for an ok run with
        ``converged`` false (trained to max_epochs without reaching the target). A store that
        cannot be reached raises its OSError."""
        files = self._run_files()
        if not files:
            return {}, []
        schema = pa.schema([("run_id", pa.string()), ("status", pa.string()), ("converged", pa.bool_())])

        def outcome(r: dict) -> str:
            if outcomes and r["status"] == "ok" and r["converged"] is False:
                return "unconverged"
            return r["status"]
        try:  # columns a row lacks (a failed row has no converged) read as null
            rows = ds.dataset([f.path for f in files], schema=schema, filesystem=self.fs,
                              format="parquet").to_table().to_pylist()
            return {r["run_id"]: outcome(r) for r in rows}, []
        except Exception as e:  # noqa: BLE001 - a corrupt file among them: one by one
            if not _is_corrupt(e):
                raise
        out, bad = {}, []
        for f in files:
            try:
                t = pq.read_table(f.path, filesystem=self.fs)
                r = {c: (t[c][0].as_py() if c in t.column_names else None) for c in schema.names}
                out[r["run_id"]] = outcome(r)
            except Exception as e:  # noqa: BLE001 - any failure to decode is "unreadable"
                if not _is_corrupt(e):
                    raise
                bad.append(f.path)
        return out, bad

    def outcomes(self) -> dict[str, str]:
        """run_id → outcome (`scan` with ``outcomes``) of every readable stored run."""
        return self.scan(outcomes=True)[0]

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

    def ok_rows(self, study_file: str = "STUDY.toml", skip_corrupt: bool = False) -> list[dict]:
        """Every stored row whose run is ok, as dicts; OldSchemaError for rows of an older run-id
        schema, StorageError when nothing is stored (``study_file`` names the fix) or a run file
        is unreadable (unless ``skip_corrupt``: `read_all`)."""
        self.check_schema(study_file)
        if not self.run_files():
            raise StorageError(f"no stored runs in {self.uri(self.runs_dir)}: nothing to measure "
                               f"(train them first with `study run {study_file}`)")
        return [r for r in self.read_all(skip_corrupt).to_pylist() if r.get("status") == "ok"]

    def read_all(self, skip_corrupt: bool = False) -> pa.Table:
        """Every run row, with differing column sets unified (missing → null), each run id once
        (`schema.stack_rows`: identical copies dropped with a warning, differing ones a
        StorageError naming the files). An unreadable run file, or one with a column of the wrong
        type, is a StorageError naming it, unless ``skip_corrupt`` (then it is left out, and
        listed in `skipped`)."""
        tables, read, self.skipped = [], [], []
        for f in self._run_files():
            try:
                tables.append(normalize_times(pq.read_table(f.path, filesystem=self.fs)))
                read.append(f.path)
            except Exception as e:  # noqa: BLE001 - any failure to decode is "unreadable"
                if not _is_corrupt(e):
                    raise
                self.skipped.append(f"{self.uri(f.path)}: {error_line(e)}")
        if self.skipped and not skip_corrupt:
            more = f" (and {len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
            raise StorageError(f"cannot read {len(self.skipped)} run file(s): {'; '.join(self.skipped[:5])}{more}. "
                               "Delete them (`study run` runs those networks again) or leave them out "
                               "with --skip-corrupt")
        if not tables:
            raise StorageError(f"no readable run files under {self.uri(self.runs_dir)}")
        try:
            table, notes = stack_rows(tables, [self.uri(p) for p in read], skip=skip_corrupt)
        except RowsError as e:
            raise StorageError(str(e)) from None
        for note in notes:
            if note.startswith("left out "):
                self.skipped.append(note[len("left out "):])
            else:
                log.warning("%s", note)
        return table

    def consolidate(self, skip_corrupt: bool = False) -> tuple[str, int]:
        """Write every run row to ``<study>/runs.parquet`` atomically; returns (path, rows).
        ``skip_corrupt``: leave unreadable run files out (listed in `skipped`) instead of failing."""
        table = self.read_all(skip_corrupt)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return self.uri(write_atomic(f"{self.base}/runs.parquet", buf.getvalue(), self.fs)), table.num_rows


def _is_corrupt(e: Exception) -> bool:
    """Whether reading a run file failed on its content (a truncated or foreign file: pyarrow's
    ArrowInvalid and the like), not on the store itself (unreachable, no permission: an
    OSError, which propagates)."""
    return not isinstance(e, OSError)
