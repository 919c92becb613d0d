"""Faster R-CNN R-101-FPT, 3x schedule: the Mask R-CNN config without the mask branch."""

from .mask_rcnn_R_101_FPT_3x import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
train.output_dir = "output/faster_rcnn_R_101_FPT_3x"

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=None,
    source="no Faster R-CNN FPT number in our sources",
    weights=None,
    convert=None,
    note="the FPT authors released no trained weights",
)
