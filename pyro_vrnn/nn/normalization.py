"""Batch normalization (Ioffe & Szegedy 2015) for the VRNN's feature network phi_x, over real steps only.

The project's founding notes guess that batch normalization "could have a huge impact" on the VRNN;
`--feature-norm batch` puts it in phi_x, between each linear layer and its ReLU:

    phi_x(x_t) = ReLU(gamma * (W x_t + b - mu) / sqrt(var + eps) + beta)

In training, mu and var are the mean and the (biased) variance of W x_t + b over the real steps of the
batch (mask True): padding never enters them, so a batch padded to any length gives its real steps the
same features. Running averages of both (momentum 0.1, the variance unbiased, as torch's BatchNorm1d)
are what evaluation uses (`model.eval()`), so a sequence's score does not depend on its batch there.
Under torchrun each process normalizes over its own batch (not synchronized batch norm), and DDP broadcasts
rank 0's running averages to the others. The outcome, measured against the preset: docs/ablations.md.
"""

import torch
import torch.nn as nn

NOT_FOR_TOKENS = "--feature-norm batch is for real-valued and binary data, not tokens: leave it out"


class MaskedBatchNorm(nn.Module):
    """Batch normalization of the last dim of [*, F] features, its statistics over the rows where mask is True."""

    def __init__(self, width, momentum=0.1, eps=1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(width))  # gamma
        self.bias = nn.Parameter(torch.zeros(width))  # beta
        self.register_buffer("running_mean", torch.zeros(width))
        self.register_buffer("running_var", torch.ones(width))

    def forward(self, h, mask=None):
        """h [*S, F]; mask [*S] (or None: every row is real), used in training only."""
        if self.training:
            rows = h.reshape(-1, h.shape[-1])
            if mask is not None:
                rows = rows[torch.broadcast_to(mask, h.shape[:-1]).reshape(-1)]
            if rows.shape[0] < 2:
                raise ValueError("--feature-norm batch needs at least two real steps in a batch to normalize over")
            mean, var = rows.mean(0), rows.var(0, unbiased=False)
            with torch.no_grad():
                n = rows.shape[0]
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / (n - 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (h - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class FeatureMLP(nn.Sequential):
    """phi_x: the paper's ReLU MLP, optionally with MaskedBatchNorm before each ReLU; called as phi_x(x, mask).
    Without normalization its layers (and so its checkpoint keys) are those of vrnn_networks.mlp."""

    def __init__(self, in_dim, width, layers, batch_norm=False):
        modules = []
        for _ in range(layers):
            modules += [nn.Linear(in_dim, width)] + ([MaskedBatchNorm(width)] if batch_norm else []) + [nn.ReLU()]
            in_dim = width
        super().__init__(*modules)

    def forward(self, x, mask=None):
        for module in self:
            x = module(x, mask) if isinstance(module, MaskedBatchNorm) else module(x)
        return x
