"""``build_resnet_fpt_backbone``: ResNet + FPT from a yacs config with a ``MODEL.FPT`` node."""

from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from .bottom_up_pyramid import BottomUpPyramid
from .neck import FPT

__all__ = ["build_resnet_fpt_backbone"]


@BACKBONE_REGISTRY.register()
def build_resnet_fpt_backbone(cfg, input_shape):
    """
    ResNet (``MODEL.RESNETS``) -> bottom-up pyramid or FPN (``MODEL.FPT.BASE``) -> FPT
    (``MODEL.FPT``, see :func:`add_fpt_config`) with P6 = max-pool of P5.
    """
    if "FPT" not in cfg.MODEL:
        raise KeyError("config has no MODEL.FPT node: call fpt.modeling.add_fpt_config(cfg) first")
    c = cfg.MODEL.FPT
    bottom_up = build_resnet_backbone(cfg, input_shape)
    try:
        if c.BASE == "BFP":
            pyramid = BottomUpPyramid(bottom_up, c.IN_FEATURES, c.OUT_CHANNELS, c.NORM)
        elif c.BASE == "FPN":
            pyramid = FPN(bottom_up, c.IN_FEATURES, c.OUT_CHANNELS, c.NORM, top_block=None)
        else:
            raise ValueError(f"base={c.BASE!r} is not supported: expected one of ['BFP', 'FPN']")
        return FPT(
            pyramid,
            out_channels=c.OUT_CHANNELS,
            norm=c.NORM,
            top_block=LastLevelMaxPool(),
            self_transformer=c.SELF_TRANSFORMER,
            grounding_transformer=c.GROUNDING_TRANSFORMER,
            rendering_transformer=c.RENDERING_TRANSFORMER,
            self_parts=c.SELF_PARTS,
            grounding_parts=c.GROUNDING_PARTS,
            self_similarity=c.SELF_SIMILARITY,
            grounding_similarity=c.GROUNDING_SIMILARITY,
            grounding_mode=c.GROUNDING_MODE,
            grounding_window=c.GROUNDING_WINDOW,
            kv_pool=list(c.KV_POOL),
            inner_channels=c.INNER_CHANNELS or None,
            attention=c.ATTENTION,
            chunk_size=c.CHUNK_SIZE or None,
            dropblock_prob=c.DROPBLOCK_PROB,
            dropblock_size=c.DROPBLOCK_SIZE,
            fusion_kernel_size=c.FUSION_KERNEL_SIZE,
        )
    except (ValueError, AssertionError) as e:
        raise ValueError(f"MODEL.FPT: {e} (keys are the upper-case FPT arguments)") from None
