"""ViTDet Mask R-CNN, ViT-L, 100 epochs LSJ (paper: 55.6 box AP, 49.2 mask AP)."""

from functools import partial

from .mask_rcnn_vitdet_b_100ep import (
    dataloader,
    get_vit_lr_decay_rate,
    lr_multiplier,
    model,
    optimizer,
    train,
)

# MAE ImageNet weights, as upstream ViTDet (fpt.compat adds the "?matching_heuristics=True" suffix
# that detectron2 0.6 lacks). Offline: convert a local copy once and point here instead:
#   python tools/convert_vitdet_checkpoint.py mae_pretrain_vit_large.pth pretrained/mae_vit_large_vitdet.pth
train.init_checkpoint = (
    "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_large.pth?matching_heuristics=True"
)

model.backbone.net.embed_dim = 1024
model.backbone.net.depth = 24
model.backbone.net.num_heads = 16
model.backbone.net.drop_path_rate = 0.4
# blocks 5, 11, 17, 23 use global attention
model.backbone.net.window_block_indexes = (
    list(range(0, 5)) + list(range(6, 11)) + list(range(12, 17)) + list(range(18, 23))
)

optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=24, lr_decay_rate=0.8)
