"""Generalization measures for any trained PyTorch classifier.

    from study.measures import measure
    values = measure(model, (x_train, y_train), init=initial_state_dict)

`measure` returns ``{name: float}`` for the selected measures (all by
default); NaN where a measure is undefined, the reason in the log. Names,
families, definitions and citations: `REGISTRY` (each measure's function says its
formula). `measure_full` also returns the seconds each measure took and the NaN reasons.

Requirements on the model: modules are registered in forward order (as in
``nn.Sequential``), each BatchNorm directly after the conv or linear layer
it normalises, activations are ``nn.ReLU`` modules. A measure that rests on
one of these declares it (``register(..., requires=("relu", "chain"))``) and
is NaN, with the reason, on a network that breaks it (`core.probe` sees it).
The inputs must be finite and the labels in [0, classes): `MeasureContext`
raises ValueError otherwise; non-finite parameters make every measure NaN.

Layers, each importing only those below it: `registry` (measures, knobs) →
`context` (`MeasureContext`) → `core` (the functional core: perturbed losses,
gradients, HVPs, the memory budget) → `weights` (BatchNorm folding) → the
families (`size`, `norms`, `flatness`, `pacbayes_optimized`, `sharpness`, `curvature`,
`optimisation`, none importing another) → this module, the one aggregator,
which imports every family so that the registry is full. `compute` runs a
selection on a context.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..train import TrainLog
from . import curvature, flatness, norms, optimisation, pacbayes_optimized, sharpness, size  # noqa: F401
from .compute import MeasureResult, compute
from .context import MeasureContext, measure_set, stable_seed
from .registry import FAMILIES, KNOBS, REGISTRY, Undefined, select

__all__ = ["measure", "measure_full", "MeasureContext", "MeasureResult", "TrainLog",
           "REGISTRY", "KNOBS", "FAMILIES", "Undefined", "select", "compute", "stable_seed",
           "measure_set"]


def _as_tensors(data) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[0]):
        return data[0], data[1]
    xs, ys = [], []
    for xb, yb in data:  # a DataLoader or any iterable of batches
        xs.append(xb)
        ys.append(yb)
    if not xs:
        raise ValueError("the training data is empty")
    return torch.cat(xs), torch.cat(ys)


def measure_full(model: nn.Module, data, *, init=None, names=("all",), exclude=(),
                 train_log: TrainLog | None = None, seed: int = 0, device=None,
                 knobs: dict | None = None, subset: int | None = None,
                 n_train: int | None = None, held_out=None) -> MeasureResult:
    """Measures of a trained classifier on its training data.

    data: ``(x, y)`` tensors or a DataLoader. init: the initial weights (a
    state dict or a module of the same architecture), needed by the
    ``*_init`` measures. subset: measure on a seeded subset of this many
    examples (`context.measure_set`; ``n_train`` defaults to the full set's size, used as ``m``).
    held_out: ``(x, y)`` the network never trained on, for what a measure reports beside
    its value (`MeasureContext.held_out`); no value depends on it.
    """
    x, y = _as_tensors(data)
    m = n_train if n_train is not None else len(x)
    x, y = measure_set(x, y, subset, seed)
    if isinstance(init, nn.Module):
        init = init.state_dict()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ctx = MeasureContext(copy.deepcopy(model), x, y, init_state=init, train_log=train_log,
                         seed=seed, knobs=knobs, n_train=m, device=device,
                         held_out=None if held_out is None else _as_tensors(held_out))
    return compute(ctx, select(names, exclude))


def measure(model: nn.Module, data, **kw) -> dict[str, float]:
    """``{name: value}`` of the selected measures; see `measure_full`."""
    return measure_full(model, data, **kw).values
