"""The measure registry: every measure is a `Measure` registered by name.

A measure is a function of a `MeasureContext` that returns one float. It is
registered with its family, its citation, the knobs it reads and what it
needs beyond the trained network and its data (``"init"``: the initial
weights; ``"train_log"``: the training log and hyperparameters). Names are
exactly those of ../shared/MEASURES.md; the Parquet column is
``measure.<name>``.

A measure that is undefined for a network raises `Undefined` with the
reason; the runner records NaN and the reason, and the other measures go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

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


@dataclass(frozen=True)
class Measure:
    name: str
    family: str
    fn: Callable[..., float] = field(repr=False)
    cite: str
    knobs: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    doc: str = ""


REGISTRY: dict[str, Measure] = {}
KNOBS: dict[str, Knob] = {}

_NEEDS = ("init", "train_log")


def knob(name: str, default: Any, doc: str) -> str:
    """Declare a knob (a measure option settable in the study file)."""
    if name in KNOBS and KNOBS[name].default != default:
        raise ValueError(f"knob {name!r} declared twice with different defaults")
    KNOBS[name] = Knob(name, default, doc)
    return name


def register(name: str, family: str, cite: str, knobs: tuple[str, ...] = (),
             needs: tuple[str, ...] = ()):
    """Decorator: register ``fn(ctx) -> float`` as measure ``name``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    for n in needs:
        if n not in _NEEDS:
            raise ValueError(f"unknown need {n!r}; needs: {', '.join(_NEEDS)}")

    def wrap(fn):
        if name in REGISTRY:
            raise ValueError(f"measure {name!r} registered twice")
        for k in knobs:
            if k not in KNOBS:
                raise ValueError(f"measure {name!r} uses undeclared knob {k!r}")
        REGISTRY[name] = Measure(name, family, fn, cite, tuple(knobs), tuple(needs),
                                 (fn.__doc__ or "").strip())
        return fn

    return wrap


def select(include=("all",), exclude=()) -> list[Measure]:
    """Measures named by ``include`` (names, families or ``"all"``) minus ``exclude``.

    Order is registration order, so results are stable. Unknown names raise
    ValueError listing what exists.
    """
    _load_all()

    def expand(items, what):
        out = set()
        for item in items:
            if item == "all":
                out |= set(REGISTRY)
            elif item in FAMILIES:
                out |= {n for n, m in REGISTRY.items() if m.family == item}
            elif item in REGISTRY:
                out.add(item)
            else:
                raise ValueError(
                    f"unknown measure or family {item!r} in measures.{what}; "
                    f"families: {', '.join(FAMILIES)}; measures: {', '.join(REGISTRY)}")
        return out

    chosen = expand(include, "include") - expand(exclude, "exclude")
    return [m for n, m in REGISTRY.items() if n in chosen]


def check_knobs(knobs: dict) -> dict:
    """Knob overrides validated against the declared knobs; returns the full set."""
    _load_all()
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown measure knob(s) {', '.join(unknown)}; "
                         f"knobs: {', '.join(sorted(KNOBS))}")
    full = {k: v.default for k, v in KNOBS.items()}
    for k, v in knobs.items():
        d = KNOBS[k].default
        if isinstance(d, bool) != isinstance(v, bool) or (
                isinstance(d, (int, float)) and not isinstance(v, (int, float))):
            raise ValueError(f"measure knob {k!r} must be like {d!r}, got {v!r}")
        full[k] = v
    return full


def _load_all() -> None:
    """Import every module that registers measures."""
    from . import catalogue  # noqa: F401  (registers on import)
