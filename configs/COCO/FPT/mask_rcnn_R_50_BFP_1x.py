"""The BFP baseline: Mask R-CNN R-50-FPT 1x without the transformers (paper: 31.6 | 29.9 AP).

Bottom-up pyramid (lateral 1x1 convs, no top-down path) + one 3x3 conv per level + P6.
"""

from .mask_rcnn_R_50_FPT_1x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.update(
    self_transformer=False,
    grounding_transformer=False,
    rendering_transformer=False,
    norm="",
    dropblock_prob=0.0,
)
train.output_dir = "output/mask_rcnn_R_50_BFP_1x"

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=dict(box=31.6, mask=29.9),
    source="FPT paper, the BFP baseline, COCO, R-50",
    weights=None,
    convert=None,
    note="the FPT authors released no trained weights",
)
