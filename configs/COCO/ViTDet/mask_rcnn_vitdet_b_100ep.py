"""ViTDet Mask R-CNN, ViT-B, 100 epochs LSJ (paper: 51.6 box AP, 45.9 mask AP)."""

from functools import partial

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from fpt.modeling import get_vit_lr_decay_rate

from ...common.coco_loader_lsj import dataloader
from ...common.models.mask_rcnn_vitdet import model
from ...common.optim import AdamW as optimizer
from ...common.train import train

train.amp.enabled = True
train.ddp.fp16_compression = True
# MAE ImageNet weights, as upstream ViTDet (fpt.compat adds the "?matching_heuristics=True" suffix
# that detectron2 0.6 lacks). Offline: convert a local copy once and point here instead:
#   python tools/convert_vitdet_checkpoint.py mae_pretrain_vit_base.pth pretrained/mae_vit_base_vitdet.pth
train.init_checkpoint = (
    "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_base.pth?matching_heuristics=True"
)

# 100 ep = 184375 iters * 64 images/iter / 118000 images/ep
train.max_iter = 184375

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[163889, 177546],
        num_updates=train.max_iter,
    ),
    warmup_length=250 / train.max_iter,
    warmup_factor=0.001,
)

optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=12, lr_decay_rate=0.7)
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}
