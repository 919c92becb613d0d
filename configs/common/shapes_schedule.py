"""The CPU schedule of the tiny Shapes models that compare necks and backbones (FPT, ViTDet):
600 iterations, warm-up 50, LR x0.1 at 450 and 550, evaluation at 300 and 600, seed 0.

Import ``train`` and ``lr_multiplier`` from here (not ``train`` from ``train.py`` too), then set
``train.output_dir``.
"""

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from .train import train

train.max_iter = 600
train.device = "cpu"
train.checkpointer.period = 200
train.eval_period = 300
train.log_period = 20
train.seed = 0

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01], milestones=[450, 550], num_updates=train.max_iter
    ),
    warmup_length=50 / train.max_iter,
    warmup_factor=0.001,
)
