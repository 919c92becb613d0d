"""ViTDet Cascade Mask R-CNN, ViT-L, 100 epochs LSJ (paper: 57.6 box AP, 49.8 mask AP)."""

from ...common.models.cascade_mask_rcnn_vitdet import model as _cascade
from .mask_rcnn_vitdet_l_100ep import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = _cascade.roi_heads

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=dict(box=57.6, mask=50.0),
    source=(
        "detectron2 ViTDet model zoo (projects/ViTDet/README.md), the checkpoint's own AP; "
        "paper: 57.6 | 49.8"
    ),
    weights=(
        "https://dl.fbaipublicfiles.com/detectron2/ViTDet/COCO/cascade_mask_rcnn_vitdet_l/"
        "f328021305/model_final_1a9f28.pkl"
    ),
    convert=None,
)
