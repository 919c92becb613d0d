"""Stochastic depth (Huang et al., 2016), per sample, as in timm's ``DropPath``."""

from torch import nn

__all__ = ["DropPath", "drop_path"]


def drop_path(x, drop_prob: float = 0.0, training: bool = False):
    """Zero whole samples of a residual branch with probability ``drop_prob``.

    Kept samples are scaled by ``1 / (1 - drop_prob)`` so that the expectation is unchanged.
    Args:
        x (Tensor): (B, ...) output of a residual branch.
    Returns:
        Tensor of the same shape.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
    if keep_prob > 0.0:
        mask.div_(keep_prob)
    return x * mask


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (active only in training mode)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self):
        return f"drop_prob={self.drop_prob:.3f}"
