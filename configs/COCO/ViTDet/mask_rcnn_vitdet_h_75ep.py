"""ViTDet Mask R-CNN, ViT-H, 75 epochs LSJ (paper: 56.7 box AP, 50.1 mask AP)."""

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
#   python tools/convert_vitdet_checkpoint.py mae_pretrain_vit_huge.pth pretrained/mae_vit_huge_vitdet.pth
train.init_checkpoint = (
    "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_huge_p14to16.pth?matching_heuristics=True"
)

model.backbone.net.embed_dim = 1280
model.backbone.net.depth = 32
model.backbone.net.num_heads = 16
model.backbone.net.drop_path_rate = 0.5
# blocks 7, 15, 23, 31 use global attention
model.backbone.net.window_block_indexes = (
    list(range(0, 7)) + list(range(8, 15)) + list(range(16, 23)) + list(range(24, 31))
)

optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=32, lr_decay_rate=0.9)

# 100 ep -> 75 ep
train.max_iter = train.max_iter * 3 // 4
lr_multiplier.scheduler.milestones = [m * 3 // 4 for m in lr_multiplier.scheduler.milestones]
lr_multiplier.scheduler.num_updates = train.max_iter
