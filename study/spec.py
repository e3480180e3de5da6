"""Study files: TOML → a validated, frozen `Study`; its grid → `RunSpec`s.

A study file has these sections, each read into typed options (frozen
pydantic models with defaults and constraints; unknown keys are errors):

    [study]      name, dataset, model, seeds (`StudyHead`), out, keep_networks,
                 max_points (the most runs the grid may give: `MAX_POINTS`)
    [data]       train_size, label_noise, data_seed, binary; xor: dim, boolean, test_size
                 (`data.DataOptions`);
                 root, download (`DataSource`)
    [model]      the model family's options (`models.MLPOptions`, `models.NiNOptions`, …)
    [train]      optimizer, lr, batch_size, weight_decay, target_loss (below ln(classes)),
                 max_epochs, lr_schedule, lr_period, lr_decay, lr_min (`train.TrainOptions`)
    [grid]       axis = [values], any option of [data], [model] or [train]:
                 the cartesian product is the study
    [measures]   include, exclude, subset, repeats, and [measures.knobs] (`MeasureSettings`)
    [resources]  num_cpus, num_gpus (per run), max_in_flight (driver) (`Resources`)

An option is either fixed in its section or an axis of the grid, not both.
The run id names the network (`RunSpec.run_id`): a hash of what fixes the
trained weights (dataset and data options, model and the model options given,
every training option, seed) and the schema version. The measures are computed
on that network and recorded in its row, but are not in its id; where and how
it runs (out, keep_networks, root, download, resources) is in neither.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from . import MAX_POINTS, SCHEMA_VERSION
from .data import DataOptions, DataSource, data_root, dataset_kind
from .models import MAX_PARAMETERS, MODELS, family
from .options import Options, check_keys, did_you_mean, parse
from .train import TrainOptions


class StudyError(ValueError):
    """The study file is invalid; the message names the problem and the fix."""


# Runs (grid points × seeds) a study may have unless its file raises ``[study] max_points``
# or the command is given ``--allow-large-grid``: the grid is never held in memory
# (`Study.runs` is lazy), but planning and `study status` hash every run id, ~30 s per
# million runs, and a typo in an axis multiplies the grid.


class StudyHead(Options):
    # the study's folder under out: a plain name, never a path ("..", "a/b") or a hidden name
    name: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$", max_length=100,
                      description="a plain name of at most 100 letters, digits, '_', '-' and "
                                  "'.', not starting with '.'")
    dataset: str
    model: str
    seeds: list[int] = Field([0], min_length=1, description="a non-empty list of distinct integers ≥ 0")
    out: str = Field("runs", min_length=1, description="a path or URI")  # in no run id
    keep_networks: bool = True  # store initial and final weights beside each row; in no run id
    # the most runs (grid points × seeds) the grid may have (`MAX_POINTS`); in no run id
    max_points: int = Field(MAX_POINTS, ge=1, description="an integer ≥ 1")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError("seeds must be distinct and ≥ 0")
        return seeds


class MeasureSettings(Options):
    include: list[str] = Field(["all"], description="a list of measure or family names")
    exclude: list[str] = Field([], description="a list of measure or family names")
    subset: int = Field(0, ge=0, description="an integer ≥ 0 (0: the whole training set)")
    knobs: dict[str, Any] = Field({}, description="a table of knob = value")
    # each stochastic measure computed R times with independent draws: mean and sd stored
    repeats: int = Field(1, ge=1, description="an integer ≥ 1 (1: one draw)")


class Resources(Options):
    """What one run asks of Ray, and how many run at once (in no run id)."""
    num_cpus: int | float = Field(1, ge=0, description="a number ≥ 0 (fractions allowed)")
    num_gpus: int | float = Field(0, ge=0, description="a number ≥ 0 (above 1: a whole number)")
    max_in_flight: int = Field(0, ge=0, description="an integer ≥ 0 (0: automatic)")

    @field_validator("num_gpus")
    @classmethod
    def _whole_above_one(cls, n: float) -> float:
        if n > 1 and n != int(n):
            raise ValueError("above 1 it must be a whole number")
        return n


SECTIONS = ("study", "data", "model", "train", "grid", "measures", "resources")


def _section_of(axis: str) -> type[Options] | None:
    """The options type of a grid axis: `DataOptions`, `TrainOptions`, else None (the model's)."""
    return (DataOptions if axis in DataOptions.model_fields
            else TrainOptions if axis in TrainOptions.model_fields else None)


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


def _hash_id(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# A seed no study has (seeds are ≥ 0): the run ids of one grid point's seeds are its
# canonical identity with this seed's text replaced (`Runs.__iter__`).
_SEED_MARK = -918273645546372819


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: the network (`identity`) and the measures computed on it, each
    part its typed options."""
    study: str
    dataset: str
    data: DataOptions
    model: str
    model_options: Options  # the family's; the fields given (file or grid) name the network
    train: TrainOptions
    seed: int
    hp: dict              # the grid point: axis -> value
    measures: MeasureSettings
    data_source: DataSource = field(default_factory=DataSource, compare=False)

    def identity(self) -> dict:
        """What fixes the trained weights, and the schema version: hashed into `run_id`. Each
        options type names the run by its `Options.id_part`; the model by the options given."""
        return {"schema": SCHEMA_VERSION, "dataset": self.dataset, "data": self.data.id_part(),
                "model": self.model, "model_options": self.model_options.as_dict(given=True),
                "train": self.train.id_part(), "seed": self.seed}

    @functools.cached_property
    def run_id(self) -> str:
        return _hash_id(_canonical(self.identity()))

    def to_json(self) -> str:
        """The row's ``config``: the identity, every training option, the study, the grid point,
        the measures and the data source."""
        return json.dumps({**self.identity(), "train": self.train.as_dict(), "study": self.study,
                           "hp": self.hp, "measures": self.measures.as_dict(),
                           "data_source": self.data_source.as_dict()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        """The spec of a row's ``config``, of this schema or an older one (whose identity also
        held the measures: the same fields; a part an older row lacks takes its defaults)."""
        d = json.loads(text)
        return cls(d["study"], d["dataset"], parse(DataOptions, d["data"]), d["model"],
                   parse(family(d["model"]).options, d["model_options"]), parse(TrainOptions, d["train"]),
                   d["seed"], d["hp"], parse(MeasureSettings, d["measures"]),
                   parse(DataSource, d.get("data_source") or {}))


@dataclass(frozen=True)
class Study:
    """A validated study file, each section its typed options. What fixes the networks: name,
    dataset, model, seeds, data, model_options, train, grid; what is computed on them: measures;
    where and how it runs: out, keep_networks, data_source, resources."""
    name: str
    dataset: str
    model: str
    seeds: tuple[int, ...]
    out: str
    data: DataOptions
    data_source: DataSource
    model_options: Options
    train: TrainOptions
    grid: dict            # axis -> tuple of values, in file order
    measures: MeasureSettings
    resources: Resources
    path: str = ""
    keep_networks: bool = True

    @property
    def size(self) -> int:
        """The number of runs: grid points × seeds (without listing them)."""
        return math.prod(len(v) for v in self.grid.values()) * len(self.seeds)

    def runs(self) -> "Runs":
        """The cartesian product of the grid, times the seeds, in a stable order: a lazy
        sequence (`Runs`), each `RunSpec` made when it is reached, so a large grid is
        streamed, never held in memory."""
        return Runs(self)

    def _spec(self, values: tuple, seed: int) -> RunSpec:
        point = dict(zip(self.grid, values))

        def at(options: Options, section: type[Options] | None) -> Options:  # with its axes set
            mine = {a: v for a, v in point.items() if _section_of(a) is section}
            return options.model_copy(update=mine) if mine else options
        return RunSpec(self.name, self.dataset, at(self.data, DataOptions), self.model,
                       at(self.model_options, None), at(self.train, TrainOptions), seed, point,
                       self.measures, self.data_source)

    def with_out(self, out: str) -> "Study":
        return replace(self, out=out)


def check_target(target_loss: float, kind, classes: int | None = None) -> None:
    """Raise ``ValueError`` unless ``target_loss`` < ln(classes), the cross-entropy of a
    uniform guess: a target at or above it is met by a network that learnt nothing (an
    untrained one often), and ``inf`` by any network. ``classes``: the dataset's, unless its
    options change them (``binary``)."""
    classes = classes or kind.num_classes
    chance = math.log(classes)
    if not target_loss < chance:
        raise ValueError(f"target_loss = {target_loss!r} must be below ln({classes}) = "
                         f"{chance:.3f}, the loss of a uniform guess over the {classes} "
                         f"classes of {kind.name}: a network meets it without learning; give a "
                         "smaller target, e.g. 0.01")


class Runs(Sequence):
    """The runs of a study (`Study.runs`), computed on demand: ``len`` is a product,
    ``runs[i]`` decodes the point of index ``i`` (the last axis varies fastest, then the
    seeds), iteration walks the grid one spec at a time."""

    def __init__(self, study: Study):
        self._study = study

    def __len__(self) -> int:
        return self._study.size

    def __iter__(self) -> Iterator[RunSpec]:
        """The specs in order; the seeds of a point share its sections and one canonical
        identity (the seed's text substituted), so its run ids cost one hash each."""
        st = self._study
        for values in itertools.product(*st.grid.values()):
            first = st._spec(values, _SEED_MARK)
            text = _canonical(first.identity())
            mark = f'"seed":{_SEED_MARK}'
            for seed in st.seeds:
                spec = RunSpec(first.study, first.dataset, first.data, first.model,
                               first.model_options, first.train, seed, first.hp,
                               first.measures, first.data_source)
                if text.count(mark) == 1:
                    spec.__dict__["run_id"] = _hash_id(text.replace(mark, f'"seed":{seed}'))
                yield spec

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"run index {i} out of range for {n} runs")
        i %= n
        st = self._study
        i, s = divmod(i, len(st.seeds))
        values = []
        for axis_values in reversed(list(st.grid.values())):
            i, k = divmod(i, len(axis_values))
            values.append(axis_values[k])
        return st._spec(tuple(reversed(values)), st.seeds[s])


def check_size(study: Study, max_points: int = MAX_POINTS, allow_large: bool = False) -> None:
    """StudyError when the study has more runs than ``max_points`` and ``allow_large`` is
    off: the message gives the count, the axes and both ways to allow it."""
    n = study.size
    if n <= max_points or allow_large:
        return
    shape = " × ".join(f"{len(v)} {a}" for a, v in study.grid.items())
    raise StudyError(
        f"{study.path or '<study>'} [grid]: {n:,} runs ({shape} × {len(study.seeds)} seeds) is "
        f"above the limit of {max_points:,} runs; if you mean it, raise [study] max_points "
        "or pass --allow-large-grid (planning and `study status` take ~30 s per million runs)")


def parse_study(doc: dict, path: str = "<study>", allow_large_grid: bool = False) -> Study:
    """Validate a parsed study document; raise StudyError naming the first problem."""
    @contextlib.contextmanager
    def at(section: str):
        """A ValueError raised inside becomes a StudyError naming the file and section."""
        try:
            yield
        except StudyError:
            raise
        except ValueError as e:
            raise StudyError(f"{path} [{section}]: {e}" if section else f"{path}: {e}") from None

    def typed(section: str, *kinds: type[Options]) -> list:
        """The section's table split among the options types ``kinds``."""
        given = sec[section]
        with at(section):
            check_keys(given, [k for t in kinds for k in t.model_fields])
            return [parse(t, {k: v for k, v in given.items() if k in t.model_fields}) for t in kinds]

    with at(""):
        check_keys(doc, SECTIONS)
    sec = {name: doc.get(name, {}) for name in SECTIONS}
    for name in (n for n, table in sec.items() if not isinstance(table, dict)):
        raise StudyError(f"{path} [{name}]: must be a table")
    head, = typed("study", StudyHead)
    with at("study"):
        kind, fam = dataset_kind(head.dataset), family(head.model)
    owner = {**dict.fromkeys(DataOptions.model_fields, DataOptions),
             **dict.fromkeys(fam.options.model_fields, fam.options),
             **dict.fromkeys(TrainOptions.model_fields, TrainOptions)}
    for section, keys in (("grid", set().union(*(f.options.model_fields for f in MODELS.values()))),
                          ("model", set(sec["model"]))):
        with at(section):
            bad = sorted(k for k in keys & set(sec[section]) if k not in fam.options.model_fields)
            if bad:
                raise ValueError(f"model {head.model!r} has no option {bad[0]!r}"
                                 f"{did_you_mean(bad[0], fam.options.model_fields)}; "
                                 f"options: {', '.join(sorted(fam.options.model_fields))}")
    with at("grid"):
        check_keys(sec["grid"], owner)
        if not sec["grid"]:
            raise ValueError("the grid is empty: give at least one axis, e.g. lr = [0.1, 0.01]")
    for section in ("data", "model", "train"):
        with at(section):
            for k in sec[section].keys() & sec["grid"].keys():
                raise ValueError(f"{k} is both fixed here and an axis of [grid]; keep one")
    (data, source), (model,), (train,) = (typed("data", DataOptions, DataSource),
                                          typed("model", fam.options), typed("train", TrainOptions))
    grid = {}
    for axis, values in sec["grid"].items():
        with at("grid"):
            if not isinstance(values, list) or not values:
                raise ValueError(f"axis {axis} = {values!r} must be a non-empty list of values")
            grid[axis] = tuple(getattr(parse(owner[axis], {axis: v}), axis) for v in values)
            if len(set(grid[axis])) != len(values):
                raise ValueError(f"axis {axis} repeats a value: {values!r}")
    with at("data"):
        kind.check_options({k for k in (*sec["data"], *sec["grid"]) if k in DataOptions.model_fields})
        for train_size in grid.get("train_size", (data.train_size,)):
            kind.check(train_size)
    with at("grid" if "target_loss" in grid else "train"):
        fewest = min(kind.classes(data.model_copy(update={"binary": b}))
                     for b in grid.get("binary", (data.binary,)))
        for target in grid.get("target_loss", (train.target_loss,)):
            check_target(target, kind, fewest)

    m, = typed("measures", MeasureSettings)
    with at("measures"):
        from .measures.registry import check_knobs, select
        if not m.include:
            raise ValueError('include is empty: name measures or families, or ["all"]')
        if not select(m.include, m.exclude):
            raise ValueError("the selection is empty after exclude")
        check_knobs(m.knobs)
    measures = m.model_copy(update={"include": sorted(m.include), "exclude": sorted(m.exclude),
                                    "knobs": dict(sorted(m.knobs.items()))})
    resources, = typed("resources", Resources)
    study = Study(head.name, head.dataset, head.model, tuple(head.seeds), head.out, data, source, model,
                  train, grid, measures, resources, path, keep_networks=head.keep_networks)
    check_size(study, head.max_points, allow_large_grid)
    with at("model"):
        check_networks(study)
    return study


def check_networks(study: Study) -> None:
    """Raise ``ValueError`` if a network of the study cannot be built for its dataset, has
    more than `models.MAX_PARAMETERS` parameters, or fails on a training batch of one example
    (BatchNorm needs two values per channel; larger batches never fail that way). Each network
    is built on PyTorch's meta device, which allocates and computes nothing, without its
    initialisation (on meta tensors some of PyTorch's init kernels import torch._dynamo: seconds)."""
    import torch

    kind, build = dataset_kind(study.dataset), family(study.model).build
    smallest: dict = {}  # (model options, shape, classes) → least batch, its options, n, batch_size
    for values in itertools.product(*study.grid.values()):  # one run per grid point: the seed
        r = study._spec(values, study.seeds[0])              # changes none of this (no run id)
        n = kind.train_examples(r.data.train_size)
        b = min(r.train.batch_size, n)
        least = min(b, n % b or b)
        shape, classes = kind.shape(r.data), kind.classes(r.data)
        key = (r.model_options, shape, classes)
        if key not in smallest or least < smallest[key][0]:
            smallest[key] = (least, r.model_options, n, r.train.batch_size)
    for (_, shape, classes), (least, options, n, batch_size) in smallest.items():
        if shape is None:  # a dataset class that does not declare its input shape
            continue
        given = ", ".join(f"{k} = {getattr(options, k)!r}" for k in sorted(options.model_fields_set))
        what = f"model {study.model!r}" + (f" with {given}" if given else "")
        try:
            with torch.device("meta"), _no_init():
                net = build(shape, classes, options)
        except ValueError as e:
            raise ValueError(f"{what} cannot be built for dataset {study.dataset!r} "
                             f"(inputs of shape {shape}): {e}") from None
        except Exception:  # a builder that cannot run on the meta device: not checked here
            continue
        size = sum(p.numel() for p in net.parameters())
        if size > MAX_PARAMETERS:
            raise ValueError(f"{what} has {size:,} parameters on {study.dataset}, above the "
                             f"limit of {MAX_PARAMETERS:,} (study.models.MAX_PARAMETERS); "
                             "give a smaller width or depth")
        if least == 1:
            try:
                net.train()(torch.empty((1, *shape), device="meta"))
            except ValueError as e:
                raise ValueError(f"{what} fails on a training batch of one example ({n} "
                                 f"training examples, batch_size = {batch_size}): {e}. "
                                 "Change batch_size or train_size") from None
            except Exception:  # noqa: BLE001 - only what the forward pass says of batches is checked
                pass


@contextlib.contextmanager
def _no_init():
    """``torch.nn.init``'s in-place initialisers made to return their tensor untouched."""
    from torch.nn import init
    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(init, n) for n in names}
    try:
        for n in names:
            setattr(init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(init, n, f)


def check_data_present(study: Study) -> None:
    """Raise StudyError if the study's data files are absent and ``[data] download = false``
    (with true, a missing dataset is fetched). It looks on this machine: `study run` checks
    where the runs read their data here (serial or local Ray), not on a cluster's nodes."""
    if study.data_source.download:
        return
    kind = dataset_kind(study.dataset)
    root = data_root(study.data_source.root).resolve()
    if not kind.present(root):
        raise StudyError(f"{study.path or '<study>'} [data]: "
                         + kind.how_to_get(root, "download = false").replace("download=True", "download = true"))


def load_study(path: str | Path, allow_large_grid: bool = False) -> Study:
    """Read and validate a study file; a grid of more than ``[study] max_points`` runs
    (default `MAX_POINTS`) is an error unless ``allow_large_grid``."""
    p = Path(path)
    if not p.is_file():
        raise StudyError(f"{p}: no such study file")
    try:
        doc = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{p}: not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses once per nested table or array
        raise StudyError(f"{p}: not valid TOML for a study file: tables or arrays nested too deeply") from None
    return parse_study(doc, str(p), allow_large_grid)
