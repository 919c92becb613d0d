"""ViTDet Mask R-CNN, ViT-L, 100 epochs LSJ (paper: 55.6 box AP, 49.2 mask AP)."""

from ...common.models.vit_sizes import set_vit_size
from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

set_vit_size("L", model, optimizer, train)

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=dict(box=55.5, mask=49.2),
    source=(
        "detectron2 ViTDet model zoo (projects/ViTDet/README.md), the checkpoint's own AP; "
        "paper: 55.6 | 49.2"
    ),
    weights=(
        "https://dl.fbaipublicfiles.com/detectron2/ViTDet/COCO/mask_rcnn_vitdet_l/f325599698/"
        "model_final_6146ed.pkl"
    ),
    convert=None,
)
