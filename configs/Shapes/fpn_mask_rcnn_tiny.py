"""The FPN baseline of ``fpt_mask_rcnn_tiny.py``: the same ResNet-18 (BatchNorm, from scratch),
64-channel pyramid P2..P6, heads, data, optimizer and 600-iteration schedule, with detectron2's
FPN as the neck in place of FPT, so that the two (and FPT's presets, by override) compare at the
same iterations and seed.
"""

from detectron2.model_zoo import get_config

from .fpt_mask_rcnn_tiny import dataloader, lr_multiplier, model, optimizer, train

fpn = get_config("common/models/mask_rcnn_fpn.py").model.backbone
fpn.bottom_up = model.backbone.pyramid.bottom_up
fpn.out_channels = model.backbone.out_channels
model.backbone = fpn

train.output_dir = "output/shapes_fpn_mask_rcnn_tiny"
