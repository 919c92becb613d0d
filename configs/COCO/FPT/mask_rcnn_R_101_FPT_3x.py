"""Mask R-CNN R-101-FPT, 3x schedule (the paper's test-dev model: 41.6 | 38.6 AP)."""

from .mask_rcnn_R_50_FPT_3x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.pyramid.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
train.output_dir = "output/mask_rcnn_R_101_FPT_3x"
