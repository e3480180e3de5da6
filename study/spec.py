"""Study files: TOML → a validated, frozen `Study`; its grid → `RunSpec`s.

A study file has these sections (unknown keys are errors):

    [study]      name, dataset, model, seeds, out
    [data]       train_size, label_noise, data_seed, root, download
    [model]      fixed model options (depth, width, dropout, batchnorm, bias)
    [train]      target_loss, max_epochs, and fixed training options
                 (optimizer, lr, batch_size, weight_decay)
    [grid]       axis = [values]: the cartesian product is the study
    [measures]   include, exclude, subset, and [measures.knobs]
    [resources]  num_cpus, num_gpus (per run), max_in_flight (driver)

An option is either fixed in its section or an axis of the grid, not both.
Every option that changes a result is in the run id (`RunSpec.run_id`): a
short hash of the canonical JSON of the run's identity plus the schema
version. Where output goes and resources are not.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import SCHEMA_VERSION
from .data import DATASETS, check_dataset_options
from .models import MODELS, model_options


class StudyError(ValueError):
    """The study file is invalid; the message names the problem and the fix."""


OPTIMIZERS = ("sgd", "momentum", "adam")

# option -> (section, type, check, description); the grid may vary any of them.
_FLOAT, _INT, _BOOL, _STR = float, int, bool, str
OPTIONS: dict[str, tuple[str, type, Any]] = {
    # data
    "train_size": ("data", _INT, lambda v: v > 0 or "must be a positive integer"),
    "label_noise": ("data", _FLOAT, lambda v: 0 <= v <= 1 or "must be in [0, 1]"),
    # model
    "depth": ("model", _INT, lambda v: v >= 1 or "must be ≥ 1"),
    "width": ("model", _INT, lambda v: v >= 1 or "must be ≥ 1"),
    "dropout": ("model", _FLOAT, lambda v: 0 <= v < 1 or "must be in [0, 1)"),
    "batchnorm": ("model", _BOOL, None),
    "bias": ("model", _BOOL, None),
    # training
    "optimizer": ("train", _STR, lambda v: v in OPTIMIZERS or f"must be one of {', '.join(OPTIMIZERS)}"),
    "lr": ("train", _FLOAT, lambda v: v > 0 or "must be > 0"),
    "batch_size": ("train", _INT, lambda v: v >= 1 or "must be ≥ 1"),
    "weight_decay": ("train", _FLOAT, lambda v: v >= 0 or "must be ≥ 0"),
}
TRAIN_DEFAULTS = {"optimizer": "sgd", "lr": 0.1, "batch_size": 64, "weight_decay": 0.0}

_SECTIONS = {
    "study": {"name", "dataset", "model", "seeds", "out"},
    "data": {"data_seed", "root", "download"} | {k for k, v in OPTIONS.items() if v[0] == "data"},
    "model": {k for k, v in OPTIONS.items() if v[0] == "model"},
    "train": {"target_loss", "max_epochs"} | {k for k, v in OPTIONS.items() if v[0] == "train"},
    "grid": set(OPTIONS),
    "measures": {"include", "exclude", "subset", "knobs"},
    "resources": {"num_cpus", "num_gpus", "max_in_flight"},
}


def _canonical(obj: Any) -> str:
    """Canonical JSON: sorted keys, floats as repr (shortest round-trip form)."""
    def norm(o):
        if isinstance(o, float):
            return {"__float__": repr(o)}
        if isinstance(o, dict):
            return {str(k): norm(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [norm(v) for v in o]
        return o
    return json.dumps(norm(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class RunSpec:
    """One network of the study: everything that determines its result."""
    study: str
    dataset: str
    data: dict            # train_size, label_noise, data_seed (root/download excluded)
    model: str
    model_options: dict
    train: dict           # optimizer, lr, batch_size, weight_decay, target_loss, max_epochs
    seed: int
    hp: dict              # the grid point: axis -> value
    measures: dict        # include, exclude, subset, knobs
    data_source: dict = field(default_factory=dict, compare=False)  # root, download

    def identity(self) -> dict:
        return {"schema": SCHEMA_VERSION, "dataset": self.dataset, "data": self.data,
                "model": self.model, "model_options": self.model_options,
                "train": self.train, "seed": self.seed, "measures": self.measures}

    @property
    def run_id(self) -> str:
        return hashlib.sha256(_canonical(self.identity()).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps({**self.identity(), "study": self.study, "hp": self.hp,
                           "data_source": self.data_source}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        d = json.loads(text)
        d.pop("schema")
        return cls(**d)


@dataclass(frozen=True)
class Study:
    name: str
    dataset: str
    model: str
    seeds: tuple[int, ...]
    out: str
    data: dict
    data_source: dict
    model_options: dict
    train: dict
    grid: dict            # axis -> tuple of values, in file order
    measures: dict
    resources: dict
    path: str = ""

    def runs(self) -> list[RunSpec]:
        """The cartesian product of the grid, times the seeds, in a stable order."""
        out = []
        for values in itertools.product(*self.grid.values()):
            point = dict(zip(self.grid, values))
            sections = {"data": dict(self.data), "model": dict(self.model_options),
                        "train": dict(self.train)}
            for axis, v in point.items():
                sections[OPTIONS[axis][0]][axis] = v
            for seed in self.seeds:
                out.append(RunSpec(self.name, self.dataset, sections["data"], self.model,
                                   sections["model"], sections["train"], seed, point,
                                   self.measures, self.data_source))
        return out

    def with_out(self, out: str) -> "Study":
        return Study(**{**self.__dict__, "out": out})


# -- validation ----------------------------------------------------------------

def _err(where: str, msg: str) -> StudyError:
    return StudyError(f"{where}: {msg}")


def _coerce(where: str, name: str, value: Any) -> Any:
    """Type-check one option value (ints accepted for floats)."""
    _, typ, check = OPTIONS[name]
    if typ is _FLOAT and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if typ is _INT and isinstance(value, bool) or not isinstance(value, typ):
        raise _err(where, f"{name} = {value!r} must be {typ.__name__}")
    if check is not None:
        ok = check(value)
        if ok is not True:
            raise _err(where, f"{name} = {value!r} {ok}")
    return value


def _keys(where: str, table: Any, allowed: set[str]) -> dict:
    if not isinstance(table, dict):
        raise _err(where, "must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _err(where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return table


def parse_study(doc: dict, path: str = "<study>") -> Study:
    """Validate a parsed study document; raise StudyError naming the first problem."""
    _keys(path, doc, set(_SECTIONS))
    sec = {name: _keys(f"{path} [{name}]", doc.get(name, {}), keys) for name, keys in _SECTIONS.items()}
    st = sec["study"]
    for key in ("name", "dataset", "model"):
        if key not in st:
            raise _err(f"{path} [study]", f"missing required key {key!r}")
    name = st["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise _err(f"{path} [study]", f"name = {name!r} must be letters, digits, '_', '-', '.'")
    if st["dataset"] not in DATASETS:
        raise _err(f"{path} [study]", f"unknown dataset {st['dataset']!r}; datasets: {', '.join(DATASETS)}")
    if st["model"] not in MODELS:
        raise _err(f"{path} [study]", f"unknown model {st['model']!r}; models: {', '.join(MODELS)}")
    seeds = st.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise _err(f"{path} [study]", f"seeds = {seeds!r} must be a non-empty list of distinct integers ≥ 0")
    out = st.get("out", "runs")
    if not isinstance(out, str) or not out:
        raise _err(f"{path} [study]", f"out = {out!r} must be a path or URI")

    # grid
    grid_doc = sec["grid"]
    if not grid_doc:
        raise _err(f"{path} [grid]", "the grid is empty: give at least one axis, e.g. lr = [0.1, 0.01]")
    grid = {}
    mopts = model_options(st["model"])
    for axis, values in grid_doc.items():
        where = f"{path} [grid]"
        if not isinstance(values, list) or not values:
            raise _err(where, f"axis {axis} = {values!r} must be a non-empty list of values")
        if OPTIONS[axis][0] == "model" and axis not in mopts:
            raise _err(where, f"model {st['model']!r} has no option {axis!r}; options: {', '.join(sorted(mopts))}")
        vals = tuple(_coerce(where, axis, v) for v in values)
        if len(set(vals)) != len(vals):
            raise _err(where, f"axis {axis} repeats a value: {values!r}")
        grid[axis] = vals

    def fixed(section: str, keys: set[str]) -> dict:
        out = {}
        for k, v in sec[section].items():
            if k not in keys:
                continue
            if k in grid:
                raise _err(f"{path} [{section}]", f"{k} is both fixed here and an axis of [grid]; keep one")
            if section == "model" and k not in mopts:
                raise _err(f"{path} [model]", f"model {st['model']!r} has no option {k!r}; options: {', '.join(sorted(mopts))}")
            out[k] = _coerce(f"{path} [{section}]", k, v)
        return out

    data = fixed("data", {"train_size", "label_noise"})
    data.setdefault("label_noise", 0.0)
    data_seed = sec["data"].get("data_seed", 0)
    if not isinstance(data_seed, int) or isinstance(data_seed, bool) or data_seed < 0:
        raise _err(f"{path} [data]", f"data_seed = {data_seed!r} must be an integer ≥ 0")
    data["data_seed"] = data_seed
    source = {"root": sec["data"].get("root"), "download": sec["data"].get("download", True)}
    if source["root"] is not None and not isinstance(source["root"], str):
        raise _err(f"{path} [data]", "root must be a path")
    if not isinstance(source["download"], bool):
        raise _err(f"{path} [data]", "download must be true or false")
    try:
        for tsize in grid.get("train_size", (data.get("train_size"),)):
            for noise in grid.get("label_noise", (data["label_noise"],)):
                check_dataset_options(st["dataset"], tsize, noise)
    except ValueError as e:
        raise _err(f"{path} [data]", str(e)) from None

    model = fixed("model", mopts)
    train = fixed("train", {k for k, v in OPTIONS.items() if v[0] == "train"})
    for k, v in TRAIN_DEFAULTS.items():
        if k not in grid:
            train.setdefault(k, v)
    tr = sec["train"]
    target = tr.get("target_loss", 0.01)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 0:
        raise _err(f"{path} [train]", f"target_loss = {target!r} must be a number > 0")
    max_epochs = tr.get("max_epochs", 300)
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise _err(f"{path} [train]", f"max_epochs = {max_epochs!r} must be an integer ≥ 1")
    train["target_loss"] = float(target)
    train["max_epochs"] = max_epochs

    measures = _measures(path, sec["measures"])
    resources = _resources(path, sec["resources"])
    return Study(name, st["dataset"], st["model"], tuple(seeds), out, data, source, model,
                 train, grid, measures, resources, path)


def _measures(path: str, m: dict) -> dict:
    from .measures.registry import check_knobs, select
    where = f"{path} [measures]"
    include = m.get("include", ["all"])
    exclude = m.get("exclude", [])
    for key, v in (("include", include), ("exclude", exclude)):
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise _err(where, f"{key} = {v!r} must be a list of measure or family names")
    if not include:
        raise _err(where, "include is empty: name measures or families, or [\"all\"]")
    subset = m.get("subset", 0)
    if isinstance(subset, bool) or not isinstance(subset, int) or subset < 0:
        raise _err(where, f"subset = {subset!r} must be an integer ≥ 0 (0: the whole training set)")
    knobs = m.get("knobs", {})
    try:
        if not select(include, exclude):
            raise _err(where, "the selection is empty after exclude")
        check_knobs(knobs)
    except StudyError:
        raise
    except ValueError as e:
        raise _err(where, str(e)) from None
    return {"include": sorted(include), "exclude": sorted(exclude), "subset": subset,
            "knobs": dict(sorted(knobs.items()))}


def _resources(path: str, r: dict) -> dict:
    where = f"{path} [resources]"
    out = {"num_cpus": r.get("num_cpus", 1), "num_gpus": r.get("num_gpus", 0),
           "max_in_flight": r.get("max_in_flight", 0)}
    for k in ("num_cpus", "num_gpus"):
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise _err(where, f"{k} = {v!r} must be a number ≥ 0 (fractions allowed)")
    if out["num_gpus"] > 1 and out["num_gpus"] != int(out["num_gpus"]):
        raise _err(where, f"num_gpus = {out['num_gpus']!r}: above 1 it must be a whole number")
    v = out["max_in_flight"]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _err(where, f"max_in_flight = {v!r} must be an integer ≥ 0 (0: automatic)")
    return out


def load_study(path: str | Path) -> Study:
    """Read and validate a study file."""
    p = Path(path)
    if not p.is_file():
        raise StudyError(f"{p}: no such study file")
    try:
        doc = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{p}: not valid TOML: {e}") from None
    return parse_study(doc, str(p))
