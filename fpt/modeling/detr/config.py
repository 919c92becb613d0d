"""yacs keys of DETR (``MODEL.DETR.*``, as DETR's detectron2 wrapper ``d2/detr/config.py``) plus
``MODEL.DETR.ENC_RPE`` (iRPE spec of the encoder; "" for none).

A yacs DETR builds, evaluates and runs in the demo; training uses detectron2's yacs optimizer
(``SOLVER.*``, SGD) with the backbone's learning rate multiplied by ``SOLVER.BACKBONE_MULTIPLIER``
(0.1, as official DETR; read by :class:`fpt.config.yacs_run.YacsRunConfig` for
``META_ARCHITECTURE: DETR`` only). Train DETR with the LazyConfigs in ``configs/COCO/DETR/``
(AdamW, backbone lr x0.1, gradient clipping, no aspect-ratio grouping, as official DETR).
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_detr_config", "rpe_from_yacs"]


def add_detr_config(cfg):
    """Add the ``MODEL.DETR`` node (official DETR-R50 defaults) to a yacs config."""
    cfg.MODEL.DETR = CN()
    cfg.MODEL.DETR.NUM_CLASSES = 80
    cfg.MODEL.DETR.GIOU_WEIGHT = 2.0
    cfg.MODEL.DETR.L1_WEIGHT = 5.0
    cfg.MODEL.DETR.DEEP_SUPERVISION = True
    cfg.MODEL.DETR.NO_OBJECT_WEIGHT = 0.1
    cfg.MODEL.DETR.NHEADS = 8
    cfg.MODEL.DETR.DROPOUT = 0.1
    cfg.MODEL.DETR.DIM_FEEDFORWARD = 2048
    cfg.MODEL.DETR.ENC_LAYERS = 6
    cfg.MODEL.DETR.DEC_LAYERS = 6
    cfg.MODEL.DETR.PRE_NORM = False
    cfg.MODEL.DETR.HIDDEN_DIM = 256
    cfg.MODEL.DETR.NUM_OBJECT_QUERIES = 100
    cfg.MODEL.DETR.ENC_RPE = ""  # e.g. "rpe-2.0-product-ctx-1-k"; "" = no iRPE
    cfg.MODEL.DETR.USE_CHECKPOINT = False  # activation checkpointing of the transformer layers
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1  # lr factor of parameters named "backbone*" (DETR)


def rpe_from_yacs(value):
    """A yacs iRPE value ("" or "none" for none) as a spec string or None."""
    return None if value in ("", None) or str(value).lower() == "none" else value
