"""Optimisation and trajectory measures, from the training log (MEASURES.md)."""

from __future__ import annotations

from .registry import Undefined, register

_ADAPTIVE = ("adam", "adamw")


@register("steps_to_loss_0.1", "optimisation", cite="Jiang et al. 2020", needs=("train_log",))
def steps_to_loss_01(ctx):
    """Optimiser steps until the training cross-entropy first reached 0.1 (Jiang et al. 2020)."""
    s = ctx.train_log.steps_to_loss_01
    if s is None:
        raise Undefined("the training loss never reached 0.1")
    return float(s)


@register("steps_loss_0.1_to_target", "optimisation", cite="Jiang et al. 2020",
          needs=("train_log",))
def steps_loss_01_to_target(ctx):
    """Optimiser steps from the training loss 0.1 to the stopping target (Jiang et al. 2020)."""
    t = ctx.train_log
    if t.steps_to_loss_01 is None:
        raise Undefined("the training loss never reached 0.1")
    if t.steps_to_target is None:
        raise Undefined("the stopping target was not reached")
    return float(t.steps_to_target - t.steps_to_loss_01)


@register("sum_train_loss", "optimisation", cite="Jiang et al. 2020", needs=("train_log",))
def sum_train_loss(ctx):
    """Σ over epochs of the epoch's mean training loss (Jiang et al. 2020)."""
    losses = ctx.train_log.epoch_losses
    if not losses:
        raise Undefined("the training log holds no epoch losses")
    return float(sum(losses))


@register("lr_over_batch", "optimisation", cite="Jastrzebski et al. 2018", needs=("train_log",))
def lr_over_batch(ctx):
    """η/B, with heavy-ball momentum β η/(B(1−β)); for Adam η/B (Jastrzebski et al. 2018)."""
    t = ctx.train_log
    if t.batch_size <= 0:
        raise Undefined(f"batch size {t.batch_size} is not positive")
    if t.optimizer.lower() in _ADAPTIVE:
        return t.lr / t.batch_size
    if not 0 <= t.momentum < 1:
        raise Undefined(f"momentum β = {t.momentum} is outside [0, 1)")
    return t.lr / (t.batch_size * (1 - t.momentum))


@register("step_size_sum", "optimisation", cite="Hardt et al. 2016", needs=("train_log",))
def step_size_sum(ctx):
    """Σ_t η_t over all optimiser steps (Hardt et al. 2016)."""
    t = ctx.train_log
    if t.steps > 0 and not t.step_size_sum > 0:
        raise Undefined(f"{t.steps} steps were logged but no step sizes (step_size_sum = "
                        f"{t.step_size_sum})")
    return float(t.step_size_sum)
