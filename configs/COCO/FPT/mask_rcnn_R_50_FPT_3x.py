"""Mask R-CNN R-50-FPT, 3x schedule."""

from detectron2.model_zoo import get_config

from .mask_rcnn_R_50_FPT_1x import dataloader, model, optimizer, train

lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_3x
train.max_iter = 270000
train.output_dir = "output/mask_rcnn_R_50_FPT_3x"

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=None,
    source="the FPT paper reports no 3x model",
    weights=None,
    convert=None,
    note="the FPT authors released no trained weights",
)
