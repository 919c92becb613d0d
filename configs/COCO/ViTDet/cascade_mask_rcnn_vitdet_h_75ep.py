"""ViTDet Cascade Mask R-CNN, ViT-H, 75 epochs LSJ (paper: 58.7 box AP, 50.9 mask AP)."""

from ...common.models.cascade_mask_rcnn_vitdet import model as _cascade
from .mask_rcnn_vitdet_h_75ep import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = _cascade.roi_heads

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=dict(box=58.7, mask=51.0),
    source=(
        "detectron2 ViTDet model zoo (projects/ViTDet/README.md), the checkpoint's own AP; "
        "paper: 58.7 | 50.9"
    ),
    weights=(
        "https://dl.fbaipublicfiles.com/detectron2/ViTDet/COCO/cascade_mask_rcnn_vitdet_h/"
        "f328730692/model_final_f05665.pkl"
    ),
    convert=None,
)
