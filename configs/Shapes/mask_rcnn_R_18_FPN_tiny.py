"""Quick start: a small ResNet-18-FPN Mask R-CNN trained from scratch on the shapes set.

Trains on 2 CPU cores in a few minutes (see README) to box and mask AP well above zero.
It is detectron2's ``common/models/mask_rcnn_fpn.py`` made small: a ResNet-18 layout
(BasicBlocks, [2, 2, 2, 2]) at half width (32-256 channels) with BatchNorm and no pre-trained
weights, a 64-channel FPN, light RoI heads, 3 classes, 128 px images.
"""

from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.modeling.backbone.resnet import BasicBlock, ResNet
from detectron2.solver import WarmupParamScheduler

from ..common.data.shapes import dataloader
from ..common.models.tiny_heads import make_heads_tiny
from ..common.train import train

model = get_config("common/models/mask_rcnn_fpn.py").model
optimizer = get_config("common/optim.py").SGD

width, channels = 32, 64  # ResNet stem/res2 width (64 in ResNet-18), FPN channels
bottom_up = model.backbone.bottom_up
bottom_up.stem.out_channels = width
bottom_up.stem.norm = "BN"
bottom_up.stages = [
    L(ResNet.make_stage)(
        block_class=BasicBlock,
        num_blocks=2,
        in_channels=width * 2 ** max(i - 1, 0),
        out_channels=width * 2**i,
        stride_per_block=[1 if i == 0 else 2, 1],
        norm="BN",
    )
    for i in range(4)
]
bottom_up.freeze_at = 0
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
train.visualize.num_images = 8

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[240, 300]),
    warmup_length=30 / 300,
    warmup_factor=0.001,
)
