"""DETR R50, 500 epochs (lr drop at 400, from the DETR paper): 42.0 box AP (official model
zoo). Recipe as ``detr_r50_300ep.py``."""

from ...common.detr_schedule import detr_schedule
from .detr_r50_300ep import dataloader, model, optimizer, train

train.max_iter, lr_multiplier = detr_schedule(epochs=500, drop_epoch=400)
train.output_dir = "output/detr_r50_500ep"
