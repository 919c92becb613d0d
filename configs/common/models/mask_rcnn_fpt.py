"""Mask R-CNN with the Feature Pyramid Transformer neck (FPT, ECCV 2020) in place of FPN.

detectron2's ``common/models/mask_rcnn_fpn.py`` with its backbone replaced: ResNet -> bottom-up
pyramid (lateral 1x1 convs, no top-down path) -> FPT (ST + GT + RT on every level) -> P2..P6.
The defaults are the paper's ablation model (no SyncBN, no DropBlock); switch anything in
``model.backbone`` (see ``fpt.modeling.FPT``), e.g. ``self_transformer=False``.
"""

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from fpt.modeling import FPT, BottomUpPyramid

model = get_config("common/models/mask_rcnn_fpn.py").model

model.backbone = L(FPT)(
    pyramid=L(BottomUpPyramid)(
        bottom_up=model.backbone.bottom_up,
        in_features="${.bottom_up.out_features}",
        out_channels="${..out_channels}",
        norm="${..norm}",
    ),
    out_channels=256,
    norm="",
    top_block=L(LastLevelMaxPool)(),
    self_transformer=True,
    grounding_transformer=True,
    rendering_transformer=True,
    self_parts=2,
    grounding_parts=4,
    self_similarity="dot",
    grounding_similarity="euclidean",
    grounding_mode="global",
    grounding_window=3,
    kv_pool=[1, 1, 1, 1],  # per level p2..p5 (or one int for all)
    inner_channels=None,
    attention="sdpa",
    chunk_size=None,
    dropblock_prob=0.0,
    dropblock_size=3,
    fusion_kernel_size=3,
)
