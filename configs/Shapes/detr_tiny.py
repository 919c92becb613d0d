"""A tiny DETR trained from scratch on the synthetic shapes set, on CPU in a few minutes.

``common/models/detr_r50.py`` made small: the half-width ResNet-18 of the tiny configs (BatchNorm,
nothing frozen), a 64-wide transformer (4 heads, FFN 128, 2 + 2 layers, no dropout), 10 queries (a
shapes image holds at most 4 objects), 3 classes; 128 px images, flip only. The same model with
iRPE in the encoder: add ``model.transformer.enc_rpe=rpe-2.0-product-ctx-1-k``.

DETR converges slowly and needs many images (facebookresearch/detr#9, #125): this config checks
the mechanics (losses fall, COCO evaluation runs), it does not aim at a good AP.
"""

from detectron2.config import LazyCall as L
from fvcore.common.param_scheduler import MultiStepParamScheduler

from fpt.data.detr_mapper import DetrDatasetMapper
from fpt.modeling.detr import detr_lr_factor

from ..common.data.shapes import dataloader
from ..common.models.detr_r50 import model
from ..common.models.resnet_tiny import make_resnet18_tiny
from ..common.optim import AdamW as optimizer
from ..common.train import train

d_model = 64
make_resnet18_tiny(model.backbone, width=32)
model.transformer.update(
    d_model=d_model,
    nhead=4,
    num_encoder_layers=2,
    num_decoder_layers=2,
    dim_feedforward=128,
    dropout=0.0,
)
model.position_encoding.num_pos_feats = d_model // 2
model.num_queries = 10
model.num_classes = 3

dataloader.train.mapper = L(DetrDatasetMapper)(
    is_train=True, augmentations=dataloader.train.mapper.augmentations, image_format="RGB"
)
dataloader.test.mapper = L(DetrDatasetMapper)(is_train=False, augmentations=[], image_format="RGB")

optimizer.lr = 5e-4
optimizer.weight_decay = 1e-4
optimizer.params.weight_decay_norm = None
optimizer.params.lr_factor_func = detr_lr_factor

train.max_iter = 600
train.clip_gradients = dict(enabled=True, clip_type="norm", clip_value=0.1, norm_type=2.0)
train.output_dir = "output/shapes_detr_tiny"
train.device = "cpu"
train.seed = 0
train.checkpointer.period = 200
train.eval_period = 300
train.log_period = 20

lr_multiplier = L(MultiStepParamScheduler)(
    values=[1.0, 0.1], milestones=[500], num_updates=train.max_iter
)
