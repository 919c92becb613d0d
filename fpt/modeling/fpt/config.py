"""yacs config of the FPT neck: ``add_fpt_config(cfg)`` adds the ``MODEL.FPT`` node."""

from detectron2.config import CfgNode as CN

__all__ = ["add_fpt_config"]


def add_fpt_config(cfg):
    """
    Add ``MODEL.FPT`` (read by ``build_resnet_fpt_backbone``) to a detectron2 config; the
    defaults are the paper's detection model. Keys are the upper-case arguments of
    :class:`fpt.modeling.fpt.FPT`.
    """
    cfg.MODEL.FPT = CN()
    cfg.MODEL.FPT.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPT.OUT_CHANNELS = 256
    cfg.MODEL.FPT.NORM = ""  # "", "BN", "SyncBN", "GN"
    cfg.MODEL.FPT.BASE = "BFP"  # input pyramid: "BFP" (bottom-up, the paper) or "FPN"
    cfg.MODEL.FPT.SELF_TRANSFORMER = True
    cfg.MODEL.FPT.GROUNDING_TRANSFORMER = True
    cfg.MODEL.FPT.RENDERING_TRANSFORMER = True
    cfg.MODEL.FPT.SELF_PARTS = 2
    cfg.MODEL.FPT.GROUNDING_PARTS = 4
    cfg.MODEL.FPT.SELF_SIMILARITY = "dot"  # "dot" or "euclidean"
    cfg.MODEL.FPT.GROUNDING_SIMILARITY = "euclidean"
    cfg.MODEL.FPT.GROUNDING_MODE = "global"  # "global" or "local" (LGT)
    cfg.MODEL.FPT.GROUNDING_WINDOW = 3
    cfg.MODEL.FPT.KV_POOL = [1, 1, 1, 1]  # key/value pooling per level (ST and global GT)
    cfg.MODEL.FPT.INNER_CHANNELS = 0  # query/key width; 0: OUT_CHANNELS
    cfg.MODEL.FPT.ATTENTION = "sdpa"  # "sdpa", "chunked" or "naive"
    cfg.MODEL.FPT.CHUNK_SIZE = 0  # queries per attention chunk; 0: the kernel's default
    cfg.MODEL.FPT.DROPBLOCK_PROB = 0.0  # 0: off
    cfg.MODEL.FPT.DROPBLOCK_SIZE = 3
    cfg.MODEL.FPT.FUSION_KERNEL_SIZE = 3  # 1: a 1x1 fusion conv (the fast preset)
    return cfg
