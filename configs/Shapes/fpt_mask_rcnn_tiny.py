"""Quick start for FPT: a ResNet-18-FPT Mask R-CNN trained from scratch on the synthetic shapes set.

Same data, schedule and heads as ``mask_rcnn_R_18_FPN_tiny.py``, with the FPT neck (64 channels,
ST + GT + RT) in place of FPN, for a side-by-side comparison on CPU.
"""

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from ..common.data.shapes import dataloader
from ..common.models.mask_rcnn_fpt_tiny import model
from ..common.train import train

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.02

train.max_iter = 600
train.output_dir = "output/shapes_fpt_mask_rcnn_tiny"
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
