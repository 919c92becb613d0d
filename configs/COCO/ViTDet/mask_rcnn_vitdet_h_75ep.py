"""ViTDet Mask R-CNN, ViT-H, 75 epochs LSJ (paper: 56.7 box AP, 50.1 mask AP)."""

from ...common.models.vit_sizes import set_vit_size
from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

set_vit_size("H", model, optimizer, train)

# 100 ep -> 75 ep
train.max_iter = train.max_iter * 3 // 4
lr_multiplier.scheduler.milestones = [m * 3 // 4 for m in lr_multiplier.scheduler.milestones]
lr_multiplier.scheduler.num_updates = train.max_iter

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=dict(box=56.7, mask=50.2),
    source=(
        "detectron2 ViTDet model zoo (projects/ViTDet/README.md), the checkpoint's own AP; "
        "paper: 56.7 | 50.1"
    ),
    weights=(
        "https://dl.fbaipublicfiles.com/detectron2/ViTDet/COCO/mask_rcnn_vitdet_h/f329145471/"
        "model_final_7224f1.pkl"
    ),
    convert=None,
)
