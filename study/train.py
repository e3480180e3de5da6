"""Train one network to a target training cross-entropy.

The whole training set's cross-entropy (eval mode) is checked once per epoch
while it is far from the next threshold (0.1, then the target), and every
tenth of an epoch once it is within twice that threshold, so the stop
overshoots the target by little. NaN or infinite loss stops training as
diverged. The initial weights are kept for the measures.

No step waits for the device: the epoch's loss is summed in a float64 tensor on
the model's device (``batch_loss.double() * batch``, the same float64 arithmetic
as summing ``batch_loss.item() * batch`` in Python, so CPU results are
bit-identical to the earlier per-step version), and divergence is checked only at
the evaluation points, which read the device anyway: the run is diverged when the
whole-set loss or the epoch's running sum is NaN or infinite. A diverged run
therefore goes on, with NaN weights, to the next evaluation point (at most one
epoch); ``log.steps`` (the row's ``steps`` and its error text) is that point's
step count, not the step whose loss first went non-finite, and the epoch's mean
loss in ``epoch_losses`` is non-finite.

`TrainOptions` declares each training option once (default, constraint): the
study file's ``[train]`` keys and grid axes, the run id's ``train`` and
`train`'s arguments all come from it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .options import Options

MOMENTUM = 0.9
#: A weight above this (in absolute value) marks the run diverged: trained networks on
#: standardised inputs have weights of order 1 to 100; 1e8 is far beyond any of them and
#: far below float32's overflow, so blown-up weights are caught before they turn to inf.
WEIGHT_LIMIT = 1e8
SCHEDULE_OPTIONS = {"constant": (), "step": ("lr_period", "lr_decay"),
                    "cosine_restarts": ("lr_period", "lr_min"), "triangular": ("lr_period", "lr_min")}
#: Options that only one optimizer reads: in the run id only with that optimizer.
OPTIMIZER_OPTIONS = {"sam": ("sam_rho",)}


class TargetMetAtInit(ValueError):
    """The network meets the target loss before any step: it would be stored untrained."""


class TrainOptions(Options):
    """How one network is trained: the run id holds these six always, a later option only
    when set away from its default (`Options.ID_ALWAYS`), and the schedule's options only
    for the schedule that uses them (`id_part`).

    ``lr_schedule`` (`learning_rate` gives the formulas): ``constant`` (the default: η
    throughout); ``step`` (η multiplied by ``lr_decay`` every ``lr_period`` epochs);
    ``cosine_restarts`` (SGDR, Loshchilov & Hutter 2017: cosine from η down to
    ``lr_min``·η over ``lr_period`` epochs, then back to η); ``triangular`` (Smith 2017's
    cyclical rate: linear from ``lr_min``·η up to η over ``lr_period`` epochs and down again
    over as many, so η, the grid's ``lr``, is the peak). ``lr`` is always the base (peak) rate.

    ``optimizer``: ``sgd``, ``momentum`` (heavy-ball, β = 0.9), ``adam``, or ``sam``
    (sharpness-aware minimisation over plain SGD, Foret et al. 2021: `sam_step`), whose
    ascent radius is ``sam_rho``."""
    ID_ALWAYS = ("optimizer", "lr", "batch_size", "weight_decay", "target_loss", "max_epochs")
    optimizer: Literal["sgd", "momentum", "adam", "sam"] = "sgd"
    lr: float = Field(0.1, gt=0)
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    target_loss: float = Field(0.01, gt=0)      # stop at this training cross-entropy
    max_epochs: int = Field(300, ge=1)
    lr_schedule: Literal["constant", "step", "cosine_restarts", "triangular"] = "constant"
    lr_period: float = Field(10.0, gt=0)        # epochs: step interval, SGDR period, half cycle
    lr_decay: float = Field(0.5, gt=0, lt=1)    # step: the factor every lr_period epochs
    lr_min: float = Field(0.0, ge=0, lt=1)      # cosine_restarts, triangular: lowest rate / lr
    sam_rho: float = Field(0.05, gt=0)          # sam: the radius ρ of the ascent step

    def id_part(self) -> dict:
        """As `Options.id_part`, less the options that the schedule or the optimizer does not
        use (they change nothing: a constant schedule with ``lr_decay`` set, or SGD with
        ``sam_rho`` set, names the same network)."""
        part = super().id_part()
        used = SCHEDULE_OPTIONS[self.lr_schedule] + OPTIMIZER_OPTIONS.get(self.optimizer, ())
        unused = {k for group in (*SCHEDULE_OPTIONS.values(), *OPTIMIZER_OPTIONS.values()) for k in group}
        return {k: v for k, v in part.items() if k not in unused or k in used}


def learning_rate(options: TrainOptions, epoch: float) -> float:
    """The learning rate at ``epoch`` (fractional: `train` passes step / steps_per_epoch
    before each step, so every schedule moves per step), η = ``options.lr``, P =
    ``lr_period``, η_min = ``lr_min``·η:

    - constant: η
    - step: η · lr_decay^⌊t/P⌋
    - cosine_restarts (SGDR, fixed period): η_min + ½(η − η_min)(1 + cos(π·t_cur/P)),
      t_cur = t mod P (a warm restart to η every P epochs)
    - triangular (Smith 2017, half cycle P): η_min + (η − η_min)·(1 − |(t mod 2P)/P − 1|),
      η_min at t = 0, 2P, …; η at t = P, 3P, …
    """
    eta, period, kind = options.lr, options.lr_period, options.lr_schedule
    if kind == "constant":
        return eta
    if kind == "step":
        return eta * options.lr_decay ** math.floor(epoch / period)
    low = options.lr_min * eta
    if kind == "cosine_restarts":
        return low + 0.5 * (eta - low) * (1 + math.cos(math.pi * math.fmod(epoch, period) / period))
    if kind == "triangular":
        return low + (eta - low) * (1 - abs(math.fmod(epoch, 2 * period) / period - 1))
    raise ValueError(f"unknown lr_schedule {kind!r}")


@dataclass
class TrainLog:
    """What the optimisation measures need from training."""
    optimizer: str                  # sgd | momentum | adam
    lr: float
    batch_size: int
    momentum: float = 0.0           # β of heavy-ball SGD, 0 otherwise
    steps: int = 0
    epochs: int = 0
    steps_to_loss_01: int | None = None  # first step where the training CE was ≤ 0.1
    steps_to_target: int | None = None   # step where the stopping target was reached
    epoch_losses: list[float] = field(default_factory=list)  # mean training loss per epoch
    step_size_sum: float = 0.0      # Σ_t η_t, the rates of the schedule (lr: its base rate)
    final_lr: float | None = None   # η of the last step taken (None: no step, or an older log)


@dataclass
class TrainResult:
    init_state: dict[str, torch.Tensor]
    log: TrainLog
    converged: bool
    diverged: bool
    final_train_loss: float
    seconds: float
    reason: str = ""                # why it diverged: which check fired


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD, heavy-ball SGD (momentum 0.9) or Adam; for ``sam``, its base update: plain SGD."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=MOMENTUM if name == "momentum" else 0.0,
                           weight_decay=weight_decay)


def sam_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
             rho: float) -> torch.Tensor:
    """One SAM step (Foret et al. 2021) on the mini-batch (x, y); returns the loss at w.

    g = ∇L_B(w); ε = ρ·g/‖g‖ (‖·‖ over all parameters); the gradient ∇L_B(w + ε) is
    computed at w + ε, the weights are put back to w, and the base optimizer ``opt`` steps
    with it (weight decay, if any, applied by ``opt`` at w). Two forward and backward passes;
    with BatchNorm both update the running statistics, with dropout each draws its own mask.
    Where g = 0 the ascent is ε = 0 (an ordinary step)."""
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    with torch.no_grad():
        norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params))
        scale = torch.where(norm > 0, rho / norm, torch.zeros_like(norm))  # no read of the device
        eps = [(p.grad * scale).to(p.dtype) for p in params]
        for p, e in zip(params, eps):
            p.add_(e)
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        for p, e in zip(params, eps):
            p.sub_(e)
    opt.step()
    return loss


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) in eval mode; restores the previous mode."""
    was = model.training
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch):
        z = model(x[i:i + batch])
        loss += F.cross_entropy(z, y[i:i + batch], reduction="sum").item()
        correct += (z.argmax(1) == y[i:i + batch]).sum().item()
    model.train(was)
    return loss / len(x), correct / len(x)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, options: TrainOptions, *,
          seed: int, on_epoch=None) -> TrainResult:
    """Train ``model`` in place on (x, y), already on the model's device."""
    t0 = time.perf_counter()
    optimizer, lr, batch_size = options.optimizer, options.lr, options.batch_size
    target_loss, max_epochs = options.target_loss, options.max_epochs
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = make_optimizer(optimizer, model.parameters(), lr, options.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    steps_per_epoch = math.ceil(n / batch_size)
    fine = max(1, steps_per_epoch // 10)
    log = TrainLog(optimizer=optimizer, lr=lr, batch_size=batch_size,
                   momentum=MOMENTUM if optimizer == "momentum" else 0.0)
    thresholds = [0.1, target_loss] if target_loss < 0.1 else [target_loss]
    loss, _ = evaluate(model, x, y)
    converged = diverged = False

    def check() -> bool:
        """Record thresholds reached; True when the target is reached."""
        nonlocal loss
        loss, _ = evaluate(model, x, y)
        if not math.isfinite(loss):
            return False
        if log.steps_to_loss_01 is None and loss <= 0.1:
            log.steps_to_loss_01 = log.steps
        if loss <= target_loss:
            log.steps_to_target = log.steps
            return True
        return False

    if check():
        raise TargetMetAtInit(
            f"the training loss at initialisation, {loss:.4g}, is already at or below "
            f"target_loss = {target_loss}: the network would be stored untrained as converged; "
            "give a smaller target_loss")
    scheduled = options.lr_schedule != "constant"
    reason = ""
    model.train()
    epoch = 0
    while not converged and not diverged and epoch < max_epochs:
        perm = torch.randperm(n, generator=gen).to(x.device)
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        count = 0
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            rate = learning_rate(options, log.steps / steps_per_epoch) if scheduled else lr
            if scheduled:
                for group in opt.param_groups:
                    group["lr"] = rate
            opt.zero_grad(set_to_none=True)
            if optimizer == "sam":
                batch_loss = sam_step(model, opt, x[idx], y[idx], options.sam_rho)
            else:
                batch_loss = F.cross_entropy(model(x[idx]), y[idx])
                batch_loss.backward()
                opt.step()
            log.steps += 1
            log.step_size_sum += rate
            log.final_lr = rate
            total += batch_loss.detach().double() * len(idx)
            count += len(idx)
            nxt = next((t for t in thresholds if loss > t), None)
            near = nxt is not None and loss <= 2 * nxt
            last = b == steps_per_epoch - 1
            if (near and log.steps % fine == 0) or last:
                if not bool(torch.isfinite(total)):  # some batch loss since the epoch began
                    diverged, reason = True, "training loss became NaN or infinite"
                    break
                reached = check()
                if not math.isfinite(loss):
                    diverged, reason = True, "training loss became NaN or infinite"
                    break
                big = largest_weight(model)
                if not big <= WEIGHT_LIMIT:  # NaN too
                    diverged = True
                    reason = ("a weight became NaN or infinite" if not math.isfinite(big) else
                              f"the weights blew up (largest |w| = {big:.3g}, above {WEIGHT_LIMIT:g})")
                    break
                if reached:
                    converged = True
                    break
                model.train()
        epoch += 1
        if count:
            log.epoch_losses.append(total.item() / count)
        if on_epoch is not None:
            on_epoch(epoch, loss)
    model.eval()
    log.epochs = epoch
    if diverged:
        loss = math.nan
    return TrainResult(init_state, log, converged, diverged, loss, time.perf_counter() - t0, reason)


@torch.no_grad()
def largest_weight(model: nn.Module) -> float:
    """max |w| over the parameters (NaN if any is NaN): one read of the device."""
    tops = [p.detach().abs().max().float() for p in model.parameters() if p.numel()]
    return float(torch.stack(tops).max()) if tops else 0.0  # max propagates NaN

