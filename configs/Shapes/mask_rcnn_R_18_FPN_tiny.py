"""Quick start: a small ResNet-18-FPN Mask R-CNN trained from scratch on the shapes set.

Trains on 2 CPU cores in a few minutes (see README) to box and mask AP well above zero.
It is detectron2's ``common/models/mask_rcnn_fpn.py`` made small: a ResNet-18 layout
(BasicBlocks, [2, 2, 2, 2]) at half width (32-256 channels) with BatchNorm and no pre-trained
weights, a 64-channel FPN, light RoI heads, 3 classes, 128 px images.
"""

from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler

from ..common.data.shapes import dataloader
from ..common.models.resnet_tiny import make_resnet18_tiny
from ..common.models.tiny_heads import make_heads_tiny
from ..common.train import train

model = get_config("common/models/mask_rcnn_fpn.py").model
optimizer = get_config("common/optim.py").SGD

channels = 64  # FPN channels
make_resnet18_tiny(model.backbone.bottom_up, width=32)
model.backbone.out_channels = channels
model.pixel_std = [57.375, 57.120, 58.395]

make_heads_tiny(model, channels, num_classes=3, roi_batch_size=64)
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.mask_head.conv_dims = [channels, channels]

dataloader.train.total_batch_size = 4
optimizer.lr = 0.02

train.max_iter = 300
train.output_dir = "output/shapes_mask_rcnn_R_18_FPN_tiny"
train.device = "cpu"
train.seed = 0
train.checkpointer.period = 100
train.eval_period = 100
train.log_period = 20
train.best_checkpoint.metric = "segm/AP"  # keeps model_best.pth
# from scratch at LR 0.02 with batch 4, the first ~50 iterations can blow up (one seed in four
# diverged at iteration 42; another ended at box AP 25): clipping the gradient norm to 5 keeps
# every seed on track (seeds 0-4: see README)
train.clip_gradients.update(enabled=True, clip_type="norm", clip_value=5.0)
train.visualize.num_images = 8

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[240, 300]),
    warmup_length=30 / 300,
    warmup_factor=0.001,
)
