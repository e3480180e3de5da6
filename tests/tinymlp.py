"""A tiny MLP (4 → 6 → 3, 51 parameters) whose loss is also written out by hand."""

import torch
import torch.nn.functional as F

D, H, K = 4, 6, 3
P = D * H + H + K * H + K


def explicit_loss(flat, x, y):
    """Mean cross-entropy of the tiny MLP written out by hand (parameters W1, b1, W2, b2)."""
    W1 = flat[:H * D].view(H, D)
    b1 = flat[H * D:H * D + H]
    o = H * D + H
    W2 = flat[o:o + K * H].view(K, H)
    b2 = flat[o + K * H:]
    return F.cross_entropy(torch.relu(x @ W1.T + b1) @ W2.T + b2, y)


def flat_of(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])
