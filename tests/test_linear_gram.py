"""The factored Fisher Gram matrix (`core.linear_gram`) and where it applies
(`core.linear_gram_supported`, read from the one hook probe)."""

from __future__ import annotations

import torch
from torch import nn

from study.measures import MeasureContext, core


class Reused(nn.Module):
    """One Linear applied twice: weight sharing, outside the factored path."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        return self.out(torch.relu(self.a(torch.relu(self.a(x)))))


def ctx_of(model, n=12, d=5, k=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    return MeasureContext(model.double(), x, y)


def test_supported_only_for_linear_layers_each_used_once_on_2d_input():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    tokens = nn.Sequential(nn.Unflatten(1, (5, 1)), nn.Linear(1, 4), nn.Flatten(), nn.Linear(20, 3))
    conv = nn.Sequential(nn.Unflatten(1, (1, 5)), nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(6, 3))
    assert core.linear_gram_supported(ctx_of(mlp))
    assert not core.linear_gram_supported(ctx_of(tokens))  # a Linear on 3-D input
    assert not core.linear_gram_supported(ctx_of(conv))    # a parameter outside nn.Linear
    assert not core.linear_gram_supported(ctx_of(Reused()))


def test_linear_gram_equals_the_gram_of_explicit_per_example_gradients():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3))
    ctx = ctx_of(model)
    rows = []
    for xi, yi in zip(ctx.x, ctx.y):  # one backward pass per example, plain autograd
        model.zero_grad()
        nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    G = torch.stack(rows)
    torch.testing.assert_close(core.linear_gram(ctx, ctx.x, ctx.y), G @ G.T, rtol=1e-10, atol=1e-12)
