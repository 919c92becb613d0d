"""Rendering Transformer (RT): a finer level renders a coarser one, bottom-up (FPT, Sec. 3.4)."""

import math

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.layers import Conv2d, get_norm
from torch import nn

__all__ = ["RenderingTransformer"]


class RenderingTransformer(nn.Module):
    """
    Channel attention on whole maps, with Q the coarser map and K = V the finer map:

    1. ``w = ReLU(Conv1x1(GAP(K)))``: one C-vector per image;
    2. ``Q_att = Q * w`` (channel-wise);
    3. ``V_down``: ``log2(ratio)`` stride-2 3x3 convs take V down to the coarse size (ratio 2, 4
       and 8 all work);
    4. ``out = Conv3x3(Conv3x3(Q_att) + V_down)`` (the last conv is the refinement).
    """

    def __init__(self, in_channels=256, ratio=2, norm=""):
        """
        Args:
            in_channels (int): channels C of both levels (and of the output).
            ratio (int): stride of the coarse level / stride of the fine level, a power of 2.
            norm (str): detectron2 norm name ("", "BN", "SyncBN", "GN", ...) after each 3x3 conv.
                The 1x1 conv on the 1x1 GAP vector gets no norm (BatchNorm would need > 1
                image per device).
        """
        super().__init__()
        steps = int(math.log2(ratio)) if ratio >= 2 else 0
        if 2**steps != ratio:
            raise ValueError(f"rendering ratio={ratio} must be a power of 2 >= 2")
        c = in_channels

        def conv3x3(stride=1, activation=None):
            return Conv2d(
                c, c, 3, stride, 1, bias=not norm, norm=get_norm(norm, c), activation=activation
            )

        self.channel_weight = nn.Conv2d(c, c, 1)
        self.query_conv = conv3x3()
        self.value_down = nn.Sequential(
            *(conv3x3(2, F.relu if i < steps - 1 else None) for i in range(steps))
        )
        self.refine = conv3x3(activation=F.relu)
        for layer in [self.channel_weight, self.query_conv, *self.value_down, self.refine]:
            weight_init.c2_msra_fill(layer)

    def forward(self, coarse, fine):
        """coarse: (B, C, h, w) (Q), fine: (B, C, H, W) (K = V) -> (B, C, h, w)."""
        w = F.relu(self.channel_weight(F.adaptive_avg_pool2d(fine, 1)))
        v_down = self.value_down(fine)
        if v_down.shape[-2:] != coarse.shape[-2:]:
            raise ValueError(
                f"rendering: fine map {tuple(fine.shape[-2:])} downsampled to "
                f"{tuple(v_down.shape[-2:])}, expected the coarse size {tuple(coarse.shape[-2:])}"
            )
        return self.refine(self.query_conv(coarse * w) + v_down)
