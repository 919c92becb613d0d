"""Quick start: a ResNet-18-FPN Mask R-CNN trained from scratch on the synthetic shapes set.

Trains on 2 CPU cores in a few minutes (see README) to box and mask AP well above zero.
Everything is detectron2's ``common/models/mask_rcnn_fpn.py``, made small: ResNet-18 with
BatchNorm (no pre-trained weights), 128-channel FPN, lighter RoI heads, 3 classes, 128 px images.
"""
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from ..common.data.shapes import dataloader
from ..common.train import train

model = get_config("common/models/mask_rcnn_fpn.py").model
optimizer = get_config("common/optim.py").SGD

channels = 128
model.backbone.bottom_up.stem.norm = "BN"
model.backbone.bottom_up.stages.depth = 18
model.backbone.bottom_up.stages.norm = "BN"
del model.backbone.bottom_up.stages.stride_in_1x1  # BasicBlock has no 1x1 conv
model.backbone.bottom_up.freeze_at = 0
model.backbone.out_channels = channels
model.pixel_std = [57.375, 57.120, 58.395]

rpn = model.proposal_generator
rpn.head.in_channels = channels
rpn.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
rpn.batch_size_per_image = 128
rpn.pre_nms_topk = (600, 300)
rpn.post_nms_topk = (300, 100)

roi = model.roi_heads
roi.num_classes = 3
roi.batch_size_per_image = 128
roi.box_head.input_shape.channels = channels
roi.box_head.fc_dims = [256, 256]
roi.box_predictor.input_shape.channels = 256
roi.mask_head.input_shape.channels = channels
roi.mask_head.conv_dims = [channels, channels]

optimizer.lr = 0.02

train.max_iter = 600
train.output_dir = "output/shapes_mask_rcnn_R_18_FPN_tiny"
train.device = "cpu"
train.checkpointer.period = 200
train.eval_period = 300
train.log_period = 20
train.seed = 0

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[450, 550, 600]),
    warmup_length=50 / 600,
    warmup_factor=0.001,
)
