"""Normalization layers for convolutional feature maps."""

import torch
from torch import nn

from fpt.compat.norms import register_norm

__all__ = ["LayerNorm"]


class LayerNorm(nn.Module):
    """LayerNorm over the channel dimension of a channels-first tensor.

    As in ConvNeXt and detectron2's ViTDet: the statistics are computed over ``C`` only, for
    each position. Input and output: (N, C, H, W).

    Args:
        normalized_shape (int): number of channels C.
        eps (float): added to the variance.
    """

    def __init__(self, normalized_shape, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.normalized_shape = (normalized_shape,)

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]

    def extra_repr(self):
        return f"{self.normalized_shape[0]}, eps={self.eps}"


register_norm("LN", LayerNorm)
