"""ViTDet Mask R-CNN, ViT-B, 100 epochs LSJ (paper: 51.6 box AP, 45.9 mask AP)."""

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from ...common.coco_loader_lsj import dataloader
from ...common.models.mask_rcnn_vitdet import model
from ...common.models.vit_sizes import set_vit_size
from ...common.optim import AdamW as optimizer
from ...common.train import train

set_vit_size("B", model, optimizer, train)
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}
train.amp.enabled = True
train.ddp.fp16_compression = True

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

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=dict(box=51.6, mask=45.9),
    source=(
        "detectron2 ViTDet model zoo (projects/ViTDet/README.md), the checkpoint's own AP; "
        "paper: the same"
    ),
    weights=(
        "https://dl.fbaipublicfiles.com/detectron2/ViTDet/COCO/mask_rcnn_vitdet_b/f325346929/"
        "model_final_61ccd1.pkl"
    ),
    convert=None,
)
