"""The bottom-up feature pyramid (BFP) FPT starts from: no top-down path (FPT, Sec. 4)."""

import math

import fvcore.nn.weight_init as weight_init
from detectron2.layers import Conv2d, get_norm
from detectron2.modeling.backbone import Backbone

__all__ = ["BottomUpPyramid"]


class BottomUpPyramid(Backbone):
    """
    ``X_l = Conv1x1(C_l)`` (+ optional norm) for each bottom-up feature ``C_l``: levels named
    ``p<log2(stride)>`` (res2..res5 -> p2..p5), each with ``out_channels`` channels, and no
    cross-scale interaction.
    """

    def __init__(self, bottom_up, in_features, out_channels=256, norm=""):
        """
        Args:
            bottom_up (Backbone): e.g. a detectron2 ``ResNet``.
            in_features (list[str]): bottom-up features, from high to low resolution.
            out_channels (int): channels of every level.
            norm (str): detectron2 norm name after each lateral conv ("" for none).
        """
        super().__init__()
        shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(
                f"BottomUpPyramid in_features {missing} are not among the bottom-up outputs "
                f"{list(shapes)}"
            )
        self.bottom_up = bottom_up
        self.in_features = tuple(in_features)
        self.lateral_convs = []
        self._out_features = []
        self._out_feature_strides = {}
        self._out_feature_channels = {}
        for f in in_features:
            conv = Conv2d(
                shapes[f].channels,
                out_channels,
                1,
                bias=not norm,
                norm=get_norm(norm, out_channels),
            )
            weight_init.c2_xavier_fill(conv)
            name = f"p{int(math.log2(shapes[f].stride))}"
            self.add_module(f"lateral_{name}", conv)
            self.lateral_convs.append(conv)
            self._out_features.append(name)
            self._out_feature_strides[name] = shapes[f].stride
            self._out_feature_channels[name] = out_channels
        self._size_divisibility = shapes[in_features[-1]].stride

    @property
    def size_divisibility(self):
        return self._size_divisibility

    def forward(self, x):
        """x: (B, 3, H, W) -> {"p2": (B, C, H/4, W/4), ...}."""
        features = self.bottom_up(x)
        return {
            name: conv(features[f])
            for name, conv, f in zip(self._out_features, self.lateral_convs, self.in_features)
        }
