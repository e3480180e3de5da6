"""What a measure sees: the trained network, its measure set, knobs, cache and randomness.

`MeasureContext` holds the network in eval mode and the measure set on one
device, the parameters as a functional dict (so perturbations never touch
the module), the initial parameters when known, the training log, the knobs
and the run seed. Shared intermediate results (margins, searched scales,
Hessian spectra) are memoised with `cached`, so measures that share them
pay once; `cached` times each computation (exclusive of the shared work it
asks for in turn) and records which measures asked, so that `compute` can
charge the time to all of them in equal parts. What is computed
from the network (perturbed losses, gradients, HVPs) lives in `core`.

Every random draw comes from `generator(name)`, a CPU generator seeded from
the run seed and ``name``: draws are made on the CPU and moved to the
device, so the same weights give the same draws on CPU and CUDA.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call

from ..train import TrainLog
from .registry import check_knobs, knob

EVAL_BATCH = knob("eval_batch", 2048, "examples per forward pass when evaluating the measure set",
                  batching=True)


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from the parts, the same on every machine and Python."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_set(x: torch.Tensor, y: torch.Tensor, subset: int | None, seed: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples the measures see: ``(x, y)``, or with ``subset`` = N (``[measures] subset``;
    0 or None: all) N of them drawn by a CPU generator seeded with ``seed`` and "measure_set", the
    same draw on every device."""
    if subset and subset < len(x):
        g = torch.Generator().manual_seed(stable_seed(seed, "measure_set"))
        idx = torch.randperm(len(x), generator=g)[:subset].to(x.device)
        return x[idx], y[idx]
    return x, y


class _Failed:
    """A cached computation that raised: the exception, raised again on each ask."""
    def __init__(self, error: Exception):
        self.error = error


def check_data(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """ValueError, before any measure runs, where the measure set cannot give a meaningful
    value: NaN or infinite inputs (every loss, margin and gradient would be poisoned, and
    some measures would still return a finite number), labels that are not one per input,
    or labels outside [0, K), K the network's number of classes (the last dimension of its
    output on one example)."""
    if y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"the measure set has {len(x)} inputs but {y.numel()} labels "
                         f"(shape {tuple(y.shape)}); give one class index per input")
    if x.is_floating_point() or x.is_complex():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(f"the measure set's inputs hold {bad} non-finite entries (NaN or "
                             f"±inf) out of {x.numel()}; clean or drop those examples")
    if len(x) == 0:
        return
    try:
        with torch.no_grad():
            k = int(model(x[:1]).shape[-1])
    except Exception:  # noqa: BLE001  (a network that cannot run: each measure says so)
        return
    out = (y < 0) | (y >= k)
    if bool(out.any()):
        vals = torch.unique(y[out]).tolist()
        shown = ", ".join(map(str, vals[:10])) + (", …" if len(vals) > 10 else "")
        raise ValueError(f"{int(out.sum())} labels are out of range [0, {k}): [{shown}]; the "
                         f"network has {k} classes (its output's last dimension)")


class MeasureContext:
    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 init_state: dict[str, torch.Tensor] | None = None,
                 train_log: TrainLog | None = None, seed: int = 0,
                 knobs: dict | None = None, n_train: int | None = None,
                 device: torch.device | str | None = None,
                 held_out: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.device = torch.device(device) if device is not None else x.device
        self.model = model.to(self.device).eval()
        self.x = x.to(self.device)
        self.y = y.to(self.device).long()
        check_data(self.model, self.x, self.y)
        # examples the network never trained on (the test set), for figures a measure reports
        # beside its value (a bound's held-out error); never used by a measure's value
        self.held_out = None
        if held_out is not None:
            hx, hy = held_out[0].to(self.device), held_out[1].to(self.device).long()
            check_data(self.model, hx, hy)
            self.held_out = (hx, hy)
        self.seed = seed
        self.knobs = check_knobs(dict(knobs or {}))
        self.train_log = train_log
        self.m = int(n_train if n_train is not None else len(self.x))
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
        # shared-work accounting for `compute`: the measure running now, each cached
        # key's exclusive seconds and the measures that asked for it
        self.current: str | None = None
        self.shared_seconds: dict[str, float] = {}
        self.shared_users: dict[str, list[str]] = {}
        self._timing: list[float] = []   # per open `cached` computation: nested seconds
        # Arrays kept for plots (Hessian density, loss curves): name -> list of floats.
        # The runner stores each as a list column ``artifact.<name>``.
        self.artifacts: dict[str, list[float]] = {}
        # How a measure with more than one method was computed this time (name -> method,
        # e.g. hessian_trace -> exact_ggn); the runner stores it as ``measure_methods``.
        self.methods: dict[str, str] = {}

    # -- knobs, cache, randomness --------------------------------------------
    def knob(self, name: str) -> Any:
        return self.knobs[name]

    def cached(self, key: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` once per context under ``key``, timed, its users recorded. An
        exception is remembered too and raised again to every later caller (a search
        that fails for one measure is not rerun for each of its siblings)."""
        users = self.shared_users.setdefault(key, [])
        if self.current is not None and self.current not in users:
            users.append(self.current)
        if key not in self._cache:
            sync(self.device)
            t0 = time.perf_counter()
            self._timing.append(0.0)
            try:
                self._cache[key] = fn()
            except Exception as e:
                self._cache[key] = _Failed(e)
            finally:
                sync(self.device)
                took = time.perf_counter() - t0
                nested = self._timing.pop()
                self.shared_seconds[key] = took - nested
                if self._timing:
                    self._timing[-1] += took
        out = self._cache[key]
        if isinstance(out, _Failed):
            raise out.error
        return out

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

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype."""
        return next(iter(self.params.values())).dtype

    def randn(self, gen: torch.Generator, *shape: int) -> torch.Tensor:
        """Standard normal draws from ``gen`` (on the CPU), in the parameters' dtype and device."""
        return torch.randn(*shape, generator=gen).to(self.device).to(self.dtype)

    def rademacher(self, gen: torch.Generator, *shape: int) -> torch.Tensor:
        return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).float().to(self.device)

    # -- evaluation --------------------------------------------------------------
    def forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits of the network with ``params`` (functional; the module is untouched)."""
        return functional_call(self.model, {**self.buffers, **params}, (x,))

    def batches(self):
        """The measure set in batches of ``eval_batch`` examples."""
        b = int(self.knob(EVAL_BATCH))
        for i in range(0, len(self.x), b):
            yield self.x[i:i + b], self.y[i:i + b]
