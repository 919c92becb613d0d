"""ViTDet Cascade Mask R-CNN, ViT-B, 100 epochs LSJ (paper: 54.0 box AP, 46.7 mask AP)."""

from ...common.models.cascade_mask_rcnn_vitdet import model as _cascade
from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = _cascade.roi_heads

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=dict(box=54.0, mask=46.7),
    source=(
        "detectron2 ViTDet model zoo (projects/ViTDet/README.md), the checkpoint's own AP; "
        "paper: the same"
    ),
    weights=(
        "https://dl.fbaipublicfiles.com/detectron2/ViTDet/COCO/cascade_mask_rcnn_vitdet_b/"
        "f325358525/model_final_435fa9.pkl"
    ),
    convert=None,
)
