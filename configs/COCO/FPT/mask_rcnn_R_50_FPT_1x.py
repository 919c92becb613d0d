"""Mask R-CNN R-50-FPT, 1x, detectron2's standard recipe (the paper's 38.0 | 36.8 AP model).

The paper's full model adds SyncBN and DropBlock to the neck (without both: 37.2 | 35.9).
"""

from detectron2.model_zoo import get_config

from ...common.models.mask_rcnn_fpt import model

dataloader = get_config("common/data/coco.py").dataloader
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x
optimizer = get_config("common/optim.py").SGD
train = get_config("common/train.py").train

model.backbone.norm = "SyncBN"
model.backbone.dropblock_prob = 0.1
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.output_dir = "output/mask_rcnn_R_50_FPT_1x"

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=dict(box=38.0, mask=36.8),
    source="FPT paper (Zhang et al., ECCV 2020), COCO, R-50, SyncBN and DropBlock in the neck",
    weights=None,
    convert=None,
    note="the FPT authors released no trained weights",
)
