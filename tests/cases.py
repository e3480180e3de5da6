"""The case matrix of the measure tests: small trained networks, each with its data,
initial state and training log (the `case` fixture in conftest.py runs over `CASES`).

Each case is a tiny classifier (MLP; MLP with BatchNorm; NiN-like conv net with
BatchNorm; plain conv net with stride and padding), in float32 or float64, trained from
a seeded initialisation by mini-batch SGD with momentum on a learnable labelling (a
random linear teacher) until the full-set training loss reaches `TARGET`, so that every
training margin is positive and the training log holds every field. BatchNorm layers
train in train mode, so their running statistics are non-trivial. With CUDA, every
case is repeated on the GPU (trained on the CPU, the same weights moved over).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from study.models import mlp, nin
from study.train import TrainLog

N, K = 32, 3            # examples, classes
BATCH, LR, MOMENTUM = 8, 0.05, 0.9
TARGET = 0.05           # training stops when the full-set loss is this low
MAX_EPOCHS = 400


@dataclass
class Case:
    """A trained network with everything `measure_full` takes."""
    id: str
    model: nn.Module                    # trained, eval mode, on `device`
    x: torch.Tensor                     # on `device`
    y: torch.Tensor
    init: dict[str, torch.Tensor]       # state dict at initialisation (buffers included)
    train_log: TrainLog
    history: dict = field(repr=False)   # per-step learning rates and losses, per-epoch losses
    seed: int = 0

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return self.x.device

    def cpu(self) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        """A CPU copy of the network and the data, for the reference computations."""
        return copy.deepcopy(self.model).cpu().eval(), self.x.cpu(), self.y.cpu()

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def stride_conv(in_shape, k):
    """Convs with stride and zero padding (one needs output_padding in its transpose),
    average pooling and a linear head."""
    c, h, _ = in_shape
    return nn.Sequential(
        nn.Conv2d(c, 3, 3, stride=2, padding=1), nn.ReLU(),           # 6×6 → 3×3
        nn.Conv2d(3, 4, 2, stride=1, padding=1), nn.ReLU(),           # 3×3 → 4×4
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * (h // 3) ** 2, k))


@dataclass(frozen=True)
class Spec:
    name: str
    build: Callable[[], nn.Module]
    in_shape: tuple[int, ...]
    dtype: torch.dtype
    device: str = "cpu"
    seed: int = 0

    @property
    def id(self) -> str:
        dt = str(self.dtype).removeprefix("torch.").replace("float", "f")
        return f"{self.name}-{dt}" + ("" if self.device == "cpu" else f"-{self.device}")


_BASE = [
    Spec("mlp", lambda: mlp((5,), K, depth=2, width=6), (5,), torch.float64, seed=1),
    Spec("mlp_bn", lambda: mlp((5,), K, depth=2, width=6, batchnorm=True), (5,),
         torch.float32, seed=2),
    Spec("nin_bn", lambda: nin((2, 6, 6), K, depth=1, width=3, batchnorm=True), (2, 6, 6),
         torch.float32, seed=3),
    Spec("stride_conv", lambda: stride_conv((2, 6, 6), K), (2, 6, 6), torch.float64, seed=4),
]

CASES: list[Spec] = _BASE + (
    [Spec(s.name, s.build, s.in_shape, s.dtype, "cuda", s.seed) for s in _BASE]
    if torch.cuda.is_available() else [])


def _data(spec: Spec) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + spec.seed)
    x = torch.randn(N, *spec.in_shape, generator=g)
    # images: a teacher on the channel means, which a globally pooled net can fit
    feats = x if len(spec.in_shape) == 1 else x.mean(dim=tuple(range(2, x.dim())))
    y = (feats @ torch.randn(feats.shape[1], K, generator=g)).argmax(1)
    return x.to(spec.dtype), y


@functools.cache
def make(spec: Spec) -> Case:
    """Build and train the case (once per session)."""
    torch.manual_seed(spec.seed)
    model = spec.build().to(spec.dtype)
    init = copy.deepcopy(model.state_dict())
    x, y = _data(spec)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    g = torch.Generator().manual_seed(2000 + spec.seed)
    hist = {"step_lr": [], "step_loss": [], "epoch_loss": [], "full_loss": []}
    for _ in range(MAX_EPOCHS):
        model.train()
        batch_losses = []
        for idx in torch.randperm(N, generator=g).view(-1, BATCH):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            hist["step_lr"].append(LR)
            batch_losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            full = F.cross_entropy(model(x), y).item()
        hist["step_loss"] += batch_losses
        hist["epoch_loss"].append(sum(batch_losses) / len(batch_losses))
        hist["full_loss"].append(full)   # after the epoch's last step
        if full <= TARGET:
            break
    else:
        raise RuntimeError(f"case {spec.id} did not reach the training target {TARGET}")
    per_epoch = N // BATCH

    def first_step(threshold):  # optimiser steps until the full-set loss was ≤ threshold
        e = next(i for i, v in enumerate(hist["full_loss"]) if v <= threshold)
        return (e + 1) * per_epoch

    log = TrainLog(optimizer="momentum", lr=LR, batch_size=BATCH, momentum=MOMENTUM,
                   steps=len(hist["step_lr"]), epochs=len(hist["epoch_loss"]),
                   steps_to_loss_01=first_step(0.1), steps_to_target=first_step(TARGET),
                   epoch_losses=list(hist["epoch_loss"]), step_size_sum=float(sum(hist["step_lr"])))
    model.eval().to(spec.device)
    return Case(spec.id, model, x.to(spec.device), y.to(spec.device),
                {k: v.to(spec.device) for k, v in init.items()}, log, hist, seed=spec.seed)
