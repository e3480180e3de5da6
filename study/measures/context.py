"""What a measure sees: the trained network, its measure set, and shared helpers.

`MeasureContext` holds the network in eval mode and the measure set on one
device, the parameters as a functional dict (so perturbations never touch
the module), the initial parameters when known, the training log, the knobs
and the run seed. Shared intermediate results (margins, searched scales,
Hessian spectra) are memoised with `cached`, so measures that share them
pay once; the first measure to ask is charged the time.

Every random draw comes from `generator(name)`, a CPU generator seeded from
the run seed and ``name``: draws are made on the CPU and moved to the
device, so the same weights give the same draws on CPU and CUDA.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..train import TrainLog
from .registry import Undefined, check_knobs, knob

EVAL_BATCH = knob("eval_batch", 2048, "examples per forward pass when evaluating the measure set")


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from the parts, the same on every machine and Python."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


class MeasureContext:
    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 init_state: dict[str, torch.Tensor] | None = None,
                 train_log: TrainLog | None = None, seed: int = 0,
                 knobs: dict | None = None, n_train: int | None = None,
                 device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else x.device
        self.model = model.to(self.device).eval()
        self.x = x.to(self.device)
        self.y = y.to(self.device).long()
        self.seed = seed
        self.knobs = check_knobs(dict(knobs or {}))
        self.train_log = train_log
        self.m = int(n_train if n_train is not None else len(self.x))
        self.num_classes = None
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()
                       if p.requires_grad}
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        self.init_params = None
        self.init_state = None
        if init_state is not None:
            self.init_state = {k: v.detach().to(self.device) for k, v in init_state.items()}
            missing = [n for n in self.params if n not in self.init_state]
            if missing:
                raise ValueError(f"initial weights lack parameters {missing[:5]}")
            self.init_params = {n: self.init_state[n] for n in self.params}
        self._cache: dict[str, Any] = {}
        # Arrays kept for plots (Hessian density, loss curves): name -> list of floats.
        # The runner stores each as a list column ``artifact.<name>``.
        self.artifacts: dict[str, list[float]] = {}

    # -- knobs, cache, randomness --------------------------------------------
    def knob(self, name: str) -> Any:
        return self.knobs[name]

    def cached(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def generator(self, name: str) -> torch.Generator:
        """A CPU generator seeded from the run seed and ``name``."""
        return torch.Generator().manual_seed(stable_seed(self.seed, name))

    def subset(self, size: int, name: str) -> torch.Tensor:
        """Sorted indices of a seeded subset of ``size`` measure-set examples (all when
        size ≤ 0 or ≥ n): the size knob of a costly measure."""
        n = len(self.x)
        if size <= 0 or size >= n:
            return torch.arange(n, device=self.device)
        idx = torch.randperm(n, generator=self.generator(name))[:size]
        return idx.sort().values.to(self.device)

    def randn(self, gen: torch.Generator, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(self.device)

    def rademacher(self, gen: torch.Generator, *shape: int) -> torch.Tensor:
        return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).float().to(self.device)

    # -- parameters as one vector --------------------------------------------
    @property
    def omega_all(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def flat(self, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        params = self.params if params is None else params
        return torch.cat([params[n].reshape(-1) for n in self.params])

    def unflat(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for n, p in self.params.items():
            out[n] = vec[i:i + p.numel()].view_as(p)
            i += p.numel()
        return out

    # -- evaluation ----------------------------------------------------------
    def forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits of the network with ``params`` (functional; the module is untouched)."""
        return functional_call(self.model, {**self.buffers, **params}, (x,))

    def batches(self):
        b = int(self.knob(EVAL_BATCH))
        for i in range(0, len(self.x), b):
            yield self.x[i:i + b], self.y[i:i + b]

    @torch.no_grad()
    def logits(self, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        params = self.params if params is None else params
        return torch.cat([self.forward(params, xb) for xb, _ in self.batches()])

    @torch.no_grad()
    def loss(self, params: dict[str, torch.Tensor] | None = None) -> float:
        """Mean cross-entropy on the measure set."""
        return F.cross_entropy(self.logits(params), self.y).item()

    @torch.no_grad()
    def err(self, params: dict[str, torch.Tensor] | None = None) -> float:
        """Error rate (1 − accuracy) on the measure set."""
        return (self.logits(params).argmax(1) != self.y).float().mean().item()

    def margins(self) -> torch.Tensor:
        """Per-example margin f(x)[y] − max_{j≠y} f(x)[j] of the trained network."""
        def compute():
            z = self.logits()
            true = z.gather(1, self.y[:, None]).squeeze(1)
            other = z.scatter(1, self.y[:, None], float("-inf")).max(1).values
            return true - other
        return self.cached("margins", compute)

    def gamma(self) -> float:
        """γ: the 10th percentile of the training margins; Undefined when γ ≤ 0."""
        g = self.cached("gamma", lambda: torch.quantile(self.margins().double(), 0.1).item())
        if not g > 0 or not math.isfinite(g):
            raise Undefined(f"margin γ = {g:.4g} ≤ 0 (10th percentile of training margins)")
        return g
