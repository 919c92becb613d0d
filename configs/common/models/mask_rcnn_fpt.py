"""Mask R-CNN with the Feature Pyramid Transformer neck (FPT, ECCV 2020) in place of FPN.

detectron2's ``common/models/mask_rcnn_fpn.py`` with its backbone replaced: ResNet -> bottom-up
pyramid (lateral 1x1 convs, no top-down path) -> FPT (ST + GT + RT on every level) -> P2..P6.
Every other argument of ``fpt.modeling.FPT`` keeps its default, the paper's ablation model (ST, GT,
RT; MoS with 2/4 parts; global GT; no SyncBN, no DropBlock); set any in ``model.backbone``, e.g.
``model.backbone.self_transformer=False`` or ``model.backbone.kv_pool=[4,2,1,1]`` (checked against
the constructor's arguments).
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
    out_channels=256,  # (FPT's defaults, set here because the pyramid shares them)
    norm="",
    top_block=L(LastLevelMaxPool)(),
)
