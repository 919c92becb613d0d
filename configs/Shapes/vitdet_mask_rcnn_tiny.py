"""A tiny ViTDet Mask R-CNN trained from scratch on the synthetic shapes set (CPU-friendly).

``common/models/mask_rcnn_vitdet.py`` made small: a 4-block ViT (embed 96, 3 heads, patch 16,
window 4 with blocks 1 and 3 global, rel-pos), a 64-channel Simple Feature Pyramid, 128 px
images padded to 128x128, light heads, 3 classes, AdamW with layer-wise lr decay.
"""

from functools import partial


from fpt.modeling import get_vit_lr_decay_rate

from ..common.data.shapes import dataloader
from ..common.models.mask_rcnn_vitdet import model
from ..common.models.tiny_heads import make_heads_tiny
from ..common.optim import AdamW as optimizer
from ..common.shapes_schedule import lr_multiplier, train

image_size, channels, depth = 128, 64, 4

net = model.backbone.net
net.img_size = image_size
net.embed_dim = 96
net.depth = depth
net.num_heads = 3
net.drop_path_rate = 0.0
net.window_size = 4
net.window_block_indexes = [0, 2]
net.pretrain_img_size = image_size
model.backbone.out_channels = channels
model.backbone.square_pad = image_size

dataloader.train.mapper.image_format = "RGB"

make_heads_tiny(model, channels, num_classes=3)
model.roi_heads.box_head.conv_dims = [channels, channels]
model.roi_heads.box_head.fc_dims = [256]
model.roi_heads.mask_head.conv_dims = [channels, channels, channels]

optimizer.lr = 4e-4
optimizer.weight_decay = 0.05
optimizer.params.lr_factor_func = partial(
    get_vit_lr_decay_rate, num_layers=depth, lr_decay_rate=0.9
)
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}

train.output_dir = "output/shapes_vitdet_mask_rcnn_tiny"
