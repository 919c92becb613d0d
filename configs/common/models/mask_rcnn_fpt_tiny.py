"""A small FPT Mask R-CNN that trains from scratch on CPU (synthetic shapes, 128 px images).

``mask_rcnn_fpt.py`` made small: ResNet-18 with BatchNorm (no pre-trained weights), a 64-channel
FPT with every transformer, lighter RoI heads and 3 classes.
"""

from .mask_rcnn_fpt import model
from .tiny_heads import make_heads_tiny

channels = 64
bottom_up = model.backbone.pyramid.bottom_up
bottom_up.stem.norm = "BN"
bottom_up.stages.depth = 18
bottom_up.stages.norm = "BN"
del bottom_up.stages.stride_in_1x1  # BasicBlock has no 1x1 conv
bottom_up.freeze_at = 0
model.backbone.out_channels = channels
model.pixel_std = [57.375, 57.120, 58.395]

make_heads_tiny(model, channels, num_classes=3)
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.mask_head.conv_dims = [channels, channels]
