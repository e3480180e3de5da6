"""The measure registry, the bottom layer: it imports nothing of the package.

A measure is a function of a `MeasureContext` that returns one float. It is
registered with its family, its citation, the knobs it reads and what it
needs beyond the trained network and its data (``"init"``: the initial
weights; ``"train_log"``: the training log and hyperparameters). A name is the
measure's column, ``measure.<name>``, and its definition the function's docstring (a
test holds the names to the project's list of measures). The package ``__init__`` imports every family module, so
the registry is full whenever any part of the package is imported.

A measure that is undefined for a network raises `Undefined` with the
reason; the runner records NaN and the reason, and the other measures go on.
Assumptions a measure's definition rests on are declared, not coded in it:
``register(..., requires=("relu", "chain"))`` names `Requirement`s (declared
with `requirement` in `core`: ReLU activations, a chain of layers); each is
checked before the measure runs and a broken one makes it NaN with the
reason. `ALWAYS` (finite parameters) is checked before every measure.

Provenance: `settings` (and its short hash, `settings_hash`) is what fixes a
measure's value on a given network: its name, its code ``version`` (bump it
in ``register`` when a change of the code changes the values), the
measure-set ``subset`` and every knob it declares, defaults resolved. A
knob declared with ``batching=True`` (``eval_batch``, ``memory_mb``) only
sizes batches; every random draw is taken one vector at a time in a fixed
order, so such a knob changes nothing but floating-point rounding and is
left out, so that a new memory budget does not make every stored value
stale. A knob declared with ``artifact=True`` (``loss_surface_points``) only
adds an artifact: it enters the settings only when set away from its default
(no artifact), so that declaring it changed no stored hash, while a study that
asks for the artifact finds rows computed without it stale. The runner writes the hash as ``measure_cfg.<name>``; `study status`
and `analysis` compare them.

Repeats: a measure registered with ``stochastic=True`` draws from
``ctx.generator`` (noise, probes, random starts) or from a seeded random
subset (``ctx.subset``). With ``[measures] repeats = R > 1`` the runner
computes it R times with independent draws and stores their mean and their
sample standard deviation (``measure_sd.<name>``); ``repeats`` then enters
its `settings`, since a mean of R draws is another value. A deterministic
measure is computed once whatever R (its spread is 0 and its reliability 1 by
construction), and R never enters its settings; nor does R = 1, so hashes
written before repeats existed stay valid.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import pydantic

from ..options import did_you_mean

FAMILIES = (
    "size",         # parameter counts and VC bounds
    "norm",         # norms, margins, path norm
    "flatness",     # searched perturbation scales (Jiang et al.)
    "curvature",    # sharpness and curvature at the minimum
    "optimisation", # from the training log
)


class Undefined(Exception):
    """The measure is not defined for this network; the message says why."""


@dataclass(frozen=True)
class Knob:
    name: str
    default: Any
    doc: str
    batching: bool = False  # only sizes batches: left out of `settings`
    ge: float | None = None  # least value (numbers); floats are also finite
    gt: float | None = None  # values above this (numbers)
    artifact: bool = False  # only adds an artifact: in `settings` only away from its default

    def bounds(self) -> dict:
        """The pydantic constraints of the knob's values."""
        out = {k: v for k, v in (("ge", self.ge), ("gt", self.gt)) if v is not None}
        return {**out, "allow_inf_nan": False} if type(self.default) is float else out

    def must(self) -> str:
        """What a value must be, in words."""
        what = _TYPE_TEXT.get(type(self.default), type(self.default).__name__)
        bound = (f" ≥ {self.ge}" if self.ge is not None else f" > {self.gt}" if self.gt is not None else "")
        return what + (" (finite)" if type(self.default) is float else "") + bound


@dataclass(frozen=True)
class Measure:
    name: str
    family: str
    fn: Callable[..., float] = field(repr=False)
    cite: str
    knobs: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    doc: str = ""
    version: int = 1
    stochastic: bool = False  # draws noise or a random subset: repeated (module docstring)
    requires: tuple[str, ...] = ()  # assumptions on the network, checked before ``fn`` runs
    by_name: bool = False  # computed only where named: not in "all" nor in its family


@dataclass(frozen=True)
class Requirement:
    """An assumption on the network that a measure's definition rests on. ``check(ctx)``
    returns None where it holds, else the reason the measure is undefined (cached on the
    context by the declaring module)."""
    name: str
    doc: str
    check: Callable[[Any], str | None] = field(repr=False)


REGISTRY: dict[str, Measure] = {}
KNOBS: dict[str, Knob] = {}
REQUIREMENTS: dict[str, Requirement] = {}

NEEDS = ("init", "train_log")
# Checked before every measure, whatever it declares (the network must hold numbers).
ALWAYS = ("finite",)


def knob(name: str, default: Any, doc: str, *, batching: bool = False, ge: float | None = None,
         artifact: bool = False) -> str:
    """Declare a knob (a measure option settable in the study file); its type is the default's.
    ``batching``: the knob only sizes batches and cannot change a value (module docstring).
    ``artifact``: the knob only adds an artifact (its default: none); it enters `settings` only
    when set away from its default, so hashes written before it existed stay valid and a row
    computed without the artifact is stale where the study asks for it.
    Its values are bounded so that a study file cannot pass validation and fail at run time:
    ``ge`` where given; else an integer knob is ≥ 1 (≥ 0 where the default is 0: "0, all"),
    a float knob is finite and > 0 (≥ 0 where the default is 0); a bool has no bound."""
    if name in KNOBS and KNOBS[name].default != default:
        raise ValueError(f"knob {name!r} declared twice with different defaults")
    gt = None
    if ge is None and type(default) is int:
        ge = 0 if default == 0 else 1
    elif ge is None and type(default) is float:
        ge, gt = (0.0, None) if default == 0 else (None, 0.0)
    if type(default) not in (int, float):
        ge = gt = None
    KNOBS[name] = Knob(name, default, doc, batching, ge, gt, artifact)
    return name


def requirement(name: str, doc: str):
    """Decorator: declare ``check(ctx) -> str | None`` as the requirement ``name`` that a
    measure may name in ``register(..., requires=...)`` (None: it holds; else why not)."""
    def wrap(check):
        if name in REQUIREMENTS:
            raise ValueError(f"requirement {name!r} declared twice")
        REQUIREMENTS[name] = Requirement(name, doc, check)
        return check
    return wrap


def checked(fn: Callable[..., float], requires: tuple[str, ...]) -> Callable[..., float]:
    """``fn`` preceded by the checks of `ALWAYS` and ``requires``: the first that fails
    raises `Undefined` with its reason, so the measure is NaN and the others go on."""
    @functools.wraps(fn)
    def run(ctx):
        for r in ALWAYS + tuple(requires):
            why = REQUIREMENTS[r].check(ctx)
            if why is not None:
                raise Undefined(why)
        return fn(ctx)
    return run


def register(name: str, family: str, cite: str, knobs: tuple[str, ...] = (),
             needs: tuple[str, ...] = (), version: int = 1, stochastic: bool = False,
             requires: tuple[str, ...] = (), by_name: bool = False):
    """Decorator: register ``fn(ctx) -> float`` as measure ``name``. ``version``: the code's
    version, in the settings hash; bump it when a change of the code changes the values.
    ``stochastic``: the value depends on random draws (``ctx.generator``, ``ctx.subset``), so
    ``[measures] repeats`` redraws it (module docstring). ``requires``: the assumptions on the
    network the measure's definition rests on (`REQUIREMENTS`, e.g. ``"relu"``, ``"chain"``),
    checked before it runs; a network that breaks one gets NaN and the reason. ``by_name``: a
    costly measure, computed only where a study names it (not part of ``"all"`` nor of its
    family). The registered ``Measure.fn`` is the checked function; the decorated one is
    returned as it is."""
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"measure {name!r}: version must be an integer ≥ 1, got {version!r}")
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    for n in needs:
        if n not in NEEDS:
            raise ValueError(f"unknown need {n!r}; needs: {', '.join(NEEDS)}")
    for r in requires:
        if r not in REQUIREMENTS:
            raise ValueError(f"measure {name!r}: unknown requirement {r!r}; "
                             f"requirements: {', '.join(REQUIREMENTS)}")

    def wrap(fn):
        if name in REGISTRY:
            raise ValueError(f"measure {name!r} registered twice")
        for k in knobs:
            if k not in KNOBS:
                raise ValueError(f"measure {name!r} uses undeclared knob {k!r}")
        REGISTRY[name] = Measure(name, family, checked(fn, tuple(requires)), cite, tuple(knobs),
                                 tuple(needs), (fn.__doc__ or "").strip(), version,
                                 bool(stochastic), tuple(requires), bool(by_name))
        return fn

    return wrap


def select(include=("all",), exclude=()) -> list[Measure]:
    """Measures named by ``include`` (names, families or ``"all"``) minus ``exclude``; a
    ``by_name`` measure only where named.

    Order is registration order, so results are stable. Unknown names raise
    ValueError listing what exists.
    """
    def expand(items, what):
        out = set()
        for item in items:
            if item == "all":
                out |= {n for n, m in REGISTRY.items() if not m.by_name}
            elif item in FAMILIES:
                out |= {n for n, m in REGISTRY.items() if m.family == item and not m.by_name}
            elif item in REGISTRY:
                out.add(item)
            else:
                raise ValueError(
                    f"unknown measure or family {item!r} in measures.{what}"
                    f"{did_you_mean(item, [*FAMILIES, *REGISTRY, 'all'])}; "
                    f"families: {', '.join(FAMILIES)}; measures: {', '.join(REGISTRY)}")
        return out

    chosen = expand(include, "include") - expand(exclude, "exclude")
    return [m for n, m in REGISTRY.items() if n in chosen]


_TYPE_TEXT = {bool: "true or false", int: "an integer", float: "a number"}


_KNOBS_MODELS: dict[tuple, type[pydantic.BaseModel]] = {}


def knobs_model() -> type[pydantic.BaseModel]:
    """The pydantic model of the declared knobs: strict, each field typed like its default
    (ints accepted for float knobs) and bounded (`Knob.bounds`), unknown names forbidden.
    Built once per set of declared knobs (building one costs ~10 ms, a context's fixed cost)."""
    key = tuple((k.name, type(k.default), k.default, tuple(sorted(k.bounds().items())))
                for k in KNOBS.values())
    if key not in _KNOBS_MODELS:
        _KNOBS_MODELS[key] = pydantic.create_model(
            "MeasureKnobs", __config__=pydantic.ConfigDict(strict=True, extra="forbid",
                                                           protected_namespaces=()),
            **{k.name: (type(k.default), pydantic.Field(k.default, **k.bounds())) for k in KNOBS.values()})
    return _KNOBS_MODELS[key]


def check_knobs(knobs: dict) -> dict:
    """Knob overrides validated against the declared knobs; returns the full set."""
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown measure knob(s) {', '.join(k if k.isprintable() and k.strip() else repr(k) for k in unknown)}"
                         f"{did_you_mean(unknown[0], KNOBS)}; "
                         f"knobs: {', '.join(sorted(KNOBS))}")
    try:
        return knobs_model()(**knobs).model_dump()
    except pydantic.ValidationError as e:
        k = str(e.errors()[0]["loc"][0])
        raise ValueError(f"measure knob {k!r} must be {KNOBS[k].must()} like its default "
                         f"{KNOBS[k].default!r}, got {knobs[k]!r}") from None


def repeats_of(measure: Measure | str, repeats: int = 1) -> int:
    """How many times ``measure`` is computed under ``[measures] repeats``: ``repeats`` for a
    stochastic measure, 1 for a deterministic one."""
    m = REGISTRY[measure] if isinstance(measure, str) else measure
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer ≥ 1, got {repeats!r}")
    return repeats if m.stochastic else 1


def settings(measure: Measure | str, knobs: dict | None = None, subset: int = 0,
             repeats: int = 1) -> dict:
    """What fixes ``measure``'s value on a network (module docstring): name, code version,
    measure-set ``subset`` (0: the whole training set), its declared non-batching knobs (an
    ``artifact`` knob only where set away from its default),
    from ``knobs`` (study-file overrides) with the defaults resolved, and ``repeats`` where
    the measure is stochastic and repeated (R > 1). Pure; JSON-ready."""
    m = REGISTRY[measure] if isinstance(measure, str) else measure
    full = check_knobs(dict(knobs or {}))
    read = sorted(k for k in set(m.knobs) if not KNOBS[k].batching
                  and not (KNOBS[k].artifact and full[k] == KNOBS[k].default))
    out = {"measure": m.name, "version": m.version, "subset": int(subset),
           "knobs": {k: type(KNOBS[k].default)(full[k]) for k in read}}
    r = repeats_of(m, repeats)
    if r > 1:
        out["repeats"] = r
    return out


def settings_hash(measure: Measure | str, knobs: dict | None = None, subset: int = 0,
                  repeats: int = 1) -> str:
    """12 hex digits of the sha256 of `settings` as canonical JSON (sorted keys, no spaces):
    the ``measure_cfg.<name>`` column of a row."""
    text = json.dumps(settings(measure, knobs, subset, repeats), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def expected_settings(measures: list[Measure], knobs: dict | None = None, subset: int = 0,
                      repeats: int = 1) -> dict[str, str]:
    """name → `settings_hash` of each measure under a study's knobs, subset and repeats: what
    a row computed now would hold."""
    return {m.name: settings_hash(m, knobs, subset, repeats) for m in measures}


def outdated(stored: dict[str, str | None], expected: dict[str, str]) -> tuple[list[str], list[str]]:
    """(stale, missing) measure names of one row: ``stored`` maps each measure the row holds a
    value of to its settings hash (None: written before hashes existed); ``expected`` is
    `expected_settings`. Stale: held with a different (or no) hash; missing: not held.
    In ``expected``'s order."""
    stale = [n for n, h in expected.items() if n in stored and stored[n] != h]
    missing = [n for n in expected if n not in stored]
    return stale, missing
