"""DETR's step schedule in iterations of total batch 16.

COCO train2017 has 118,287 images; DETR's distributed sampler gives each of 8 ranks
ceil(118,287 / 8) = 14,786 of them, i.e. 7,393 iterations of 2 images per GPU per epoch
(``drop_last``). The lr drops x0.1 once, no warmup.
"""

from detectron2.config import LazyCall as L
from fvcore.common.param_scheduler import MultiStepParamScheduler

ITERS_PER_EPOCH = 7393


def detr_schedule(epochs, drop_epoch, iters_per_epoch=ITERS_PER_EPOCH):
    """(max_iter, lr_multiplier) of ``epochs`` epochs with the lr drop after ``drop_epoch``."""
    max_iter = epochs * iters_per_epoch
    return max_iter, L(MultiStepParamScheduler)(
        values=[1.0, 0.1], milestones=[drop_epoch * iters_per_epoch], num_updates=max_iter
    )
