"""Semantic segmentation with the FPT neck: detectron2's ``SemanticSegmentor`` + ``SemSegFPNHead``.

For pixel-level tasks the paper uses the locality-constrained Grounding Transformer (LGT):
``grounding_mode="local"`` (each fine position attends to a 3x3 coarse window). The output is
P2..P5 (no P6); the head fuses them at stride 4.
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling import SemanticSegmentor
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead

from .mask_rcnn_fpt import model as _detector

model = L(SemanticSegmentor)(
    backbone=_detector.backbone,
    sem_seg_head=L(SemSegFPNHead)(
        input_shape={
            f"p{level}": L(ShapeSpec)(channels="${....backbone.out_channels}", stride=2**level)
            for level in range(2, 6)
        },
        num_classes=19,
        conv_dims=128,
        common_stride=4,
        loss_weight=1.0,
        norm="GN",
        ignore_value=255,
    ),
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
)
model.backbone.top_block = None
model.backbone.grounding_mode = "local"
