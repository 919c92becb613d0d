"""Mask R-CNN R-101-FPT, 3x schedule (the paper's test-dev model: 41.6 | 38.6 AP)."""

from .mask_rcnn_R_50_FPT_3x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.pyramid.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
train.output_dir = "output/mask_rcnn_R_101_FPT_3x"

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=dict(box=41.6, mask=38.6),
    source="FPT paper, R-101, on COCO test-dev (not val2017); its schedule is not stated",
    weights=None,
    convert=None,
    note="the FPT authors released no trained weights",
)
