"""Simple Feature Pyramid of ViTDet: a multi-scale pyramid from the last ViT feature map only.

Same constructor, parameter names and math as upstream detectron2 (main branch,
``detectron2/modeling/backbone/vit.py``), and registered in ``BACKBONE_REGISTRY`` as
``build_vitdet_backbone`` for yacs configs (see :func:`add_vitdet_config`).
"""

import math
from functools import partial

from torch import nn

from detectron2.config import CfgNode as CN
from detectron2.layers import Conv2d, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from .vit import ViT

__all__ = ["SimpleFeaturePyramid", "add_vitdet_config", "build_vitdet_backbone"]


class SimpleFeaturePyramid(Backbone):
    """Pyramid p2..p5 (+ top block levels) built from one feature map of a plain backbone.

    Each scale factor gets a branch ``simfp_{log2 stride}``: x4 = ConvT(C->C/2, k2 s2) + norm +
    GELU + ConvT(C/2->C/4); x2 = ConvT(C->C/2); x1 = identity; x0.5 = MaxPool(2); each followed
    by Conv1x1(->out_channels) + norm and Conv3x3 + norm (conv bias only when ``norm == ""``).

    Args:
        net (Backbone): plain backbone, e.g. :class:`ViT`.
        in_feature (str): name of ``net``'s output used.
        out_channels (int): channels of every pyramid level.
        scale_factors (list[float]): subset of (4.0, 2.0, 1.0, 0.5), in this order.
        top_block (nn.Module or None): extra levels from the last one (e.g. ``LastLevelMaxPool``).
        norm (str): norm of the pyramid convs ("LN": channels-first LayerNorm).
        square_pad (int): if > 0, every batch is zero-padded to ``square_pad x square_pad``
            (ViTDet pads to 1024): returned as ``size_divisibility`` for detectron2 0.6's
            ``GeneralizedRCNN`` (equivalent for images no larger than ``square_pad``) and as
            ``padding_constraints["square_size"]`` for newer detectron2.
    Outputs:
        dict {"p2": (B, out_channels, H/4, W/4), ..., "p6": (B, out_channels, H/64, W/64)}.
    """

    def __init__(
        self,
        net,
        in_feature,
        out_channels,
        scale_factors,
        top_block=None,
        norm="LN",
        square_pad=0,
    ):
        super().__init__()
        if not isinstance(net, Backbone):
            raise TypeError(f"SimpleFeaturePyramid: net must be a Backbone, got {type(net)}")
        self.scale_factors = scale_factors

        input_shapes = net.output_shape()
        if in_feature not in input_shapes:
            raise ValueError(
                f"SimpleFeaturePyramid: in_feature={in_feature!r} is not an output of net "
                f"(outputs: {sorted(input_shapes)})"
            )
        strides = [int(input_shapes[in_feature].stride / scale) for scale in scale_factors]
        for prev, cur in zip(strides[:-1], strides[1:]):
            if cur != 2 * prev:
                raise ValueError(
                    f"SimpleFeaturePyramid: scale_factors={list(scale_factors)} give strides "
                    f"{strides}; expected log2-contiguous, decreasing scales (e.g. 4, 2, 1, 0.5)"
                )

        dim = input_shapes[in_feature].channels
        self.stages = []
        use_bias = norm == ""
        for idx, scale in enumerate(scale_factors):
            out_dim = dim
            if scale == 4.0:
                layers = [
                    nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
                    get_norm(norm, dim // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
                ]
                out_dim = dim // 4
            elif scale == 2.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)]
                out_dim = dim // 2
            elif scale == 1.0:
                layers = []
            elif scale == 0.5:
                layers = [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                raise ValueError(
                    f"SimpleFeaturePyramid: scale factor {scale} is not supported; "
                    "expected one of 4.0, 2.0, 1.0, 0.5"
                )
            layers.extend(
                [
                    Conv2d(
                        out_dim,
                        out_channels,
                        kernel_size=1,
                        bias=use_bias,
                        norm=get_norm(norm, out_channels),
                    ),
                    Conv2d(
                        out_channels,
                        out_channels,
                        kernel_size=3,
                        padding=1,
                        bias=use_bias,
                        norm=get_norm(norm, out_channels),
                    ),
                ]
            )
            layers = nn.Sequential(*layers)
            stage = int(math.log2(strides[idx]))
            self.add_module(f"simfp_{stage}", layers)
            self.stages.append(layers)

        self.net = net
        self.in_feature = in_feature
        self.top_block = top_block
        self._out_feature_strides = {"p{}".format(int(math.log2(s))): s for s in strides}
        if self.top_block is not None:
            for s in range(stage, stage + self.top_block.num_levels):
                self._out_feature_strides["p{}".format(s + 1)] = 2 ** (s + 1)
        self._out_features = list(self._out_feature_strides.keys())
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]
        self._square_pad = square_pad

    @property
    def size_divisibility(self):
        """Padding multiple of the input: ``square_pad`` if set (square padding), else the
        largest pyramid stride before the top block."""
        if self._square_pad > 0:
            return self._square_pad
        return self._size_divisibility

    @property
    def padding_constraints(self):
        """Upstream's padding constraints (key spelling as upstream)."""
        return {"size_divisiblity": self._size_divisibility, "square_size": self._square_pad}

    def forward(self, x):
        """x: (B, C, H, W) -> dict of pyramid features (see class docstring)."""
        bottom_up_features = self.net(x)
        features = bottom_up_features[self.in_feature]
        results = [stage(features) for stage in self.stages]
        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up_features:
                top_block_in_feature = bottom_up_features[self.top_block.in_feature]
            else:
                top_block_in_feature = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_block_in_feature))
        return dict(zip(self._out_features, results))


def add_vitdet_config(cfg):
    """Add the ``MODEL.VIT`` node (ViT-B ViTDet defaults) to a yacs config."""
    cfg.MODEL.VIT = CN()
    cfg.MODEL.VIT.IMG_SIZE = 1024
    cfg.MODEL.VIT.PATCH_SIZE = 16
    cfg.MODEL.VIT.EMBED_DIM = 768
    cfg.MODEL.VIT.DEPTH = 12
    cfg.MODEL.VIT.NUM_HEADS = 12
    cfg.MODEL.VIT.MLP_RATIO = 4.0
    cfg.MODEL.VIT.QKV_BIAS = True
    cfg.MODEL.VIT.DROP_PATH_RATE = 0.1
    cfg.MODEL.VIT.USE_ABS_POS = True
    cfg.MODEL.VIT.USE_REL_POS = True
    cfg.MODEL.VIT.WINDOW_SIZE = 14
    cfg.MODEL.VIT.WINDOW_BLOCK_INDEXES = [0, 1, 3, 4, 6, 7, 9, 10]
    cfg.MODEL.VIT.RESIDUAL_BLOCK_INDEXES = []
    cfg.MODEL.VIT.USE_ACT_CHECKPOINT = False
    cfg.MODEL.VIT.PRETRAIN_IMG_SIZE = 224
    cfg.MODEL.VIT.PRETRAIN_USE_CLS_TOKEN = True
    cfg.MODEL.VIT.ATTN_IMPL = "auto"  # or "sdpa_folded", "sdpa_mask", "blocked", "explicit"
    cfg.MODEL.VIT.USE_SDPA = None  # deprecated: use ATTN_IMPL
    # iRPE spec for every attention, e.g. "rpe-2.0-product-ctx-1-k" (fpt.layers.irpe); None:
    # no iRPE (yacs keeps None: "MODEL.VIT.RPE None" on the command line, "RPE: null" in yaml)
    cfg.MODEL.VIT.RPE = None
    # Simple Feature Pyramid
    cfg.MODEL.VIT.OUT_CHANNELS = 256
    cfg.MODEL.VIT.SCALE_FACTORS = [4.0, 2.0, 1.0, 0.5]
    cfg.MODEL.VIT.NORM = "LN"
    cfg.MODEL.VIT.SQUARE_PAD = 1024


@BACKBONE_REGISTRY.register()
def build_vitdet_backbone(cfg, input_shape):
    """ViT + SimpleFeaturePyramid + LastLevelMaxPool from ``cfg.MODEL.VIT``
    (``MODEL.BACKBONE.NAME: build_vitdet_backbone``, after :func:`add_vitdet_config`)."""
    if "VIT" not in cfg.MODEL:
        raise KeyError(
            "build_vitdet_backbone: cfg.MODEL.VIT is missing; call add_vitdet_config(cfg)"
        )
    v = cfg.MODEL.VIT
    net = ViT(
        img_size=v.IMG_SIZE,
        patch_size=v.PATCH_SIZE,
        in_chans=input_shape.channels,
        embed_dim=v.EMBED_DIM,
        depth=v.DEPTH,
        num_heads=v.NUM_HEADS,
        mlp_ratio=v.MLP_RATIO,
        qkv_bias=v.QKV_BIAS,
        drop_path_rate=v.DROP_PATH_RATE,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_abs_pos=v.USE_ABS_POS,
        use_rel_pos=v.USE_REL_POS,
        window_size=v.WINDOW_SIZE,
        window_block_indexes=list(v.WINDOW_BLOCK_INDEXES),
        residual_block_indexes=list(v.RESIDUAL_BLOCK_INDEXES),
        use_act_checkpoint=v.USE_ACT_CHECKPOINT,
        pretrain_img_size=v.PRETRAIN_IMG_SIZE,
        pretrain_use_cls_token=v.PRETRAIN_USE_CLS_TOKEN,
        attn_impl=v.ATTN_IMPL,
        use_sdpa=v.USE_SDPA,
        rpe=v.RPE,
    )
    return SimpleFeaturePyramid(
        net,
        in_feature="last_feat",
        out_channels=v.OUT_CHANNELS,
        scale_factors=tuple(v.SCALE_FACTORS),
        top_block=LastLevelMaxPool(),
        norm=v.NORM,
        square_pad=v.SQUARE_PAD,
    )
