"""DETR with a ResNet-50 backbone (official DETR-R50): FrozenBN ResNet-50 (torchvision layout,
stem and res2 frozen) -> res5 -> 1x1 conv to 256 -> 6 + 6 post-norm transformer (8 heads, FFN
2048, dropout 0.1) with sine position encoding -> 100 queries -> class (80 + "no object") and box
heads on every decoder layer; Hungarian matching with costs class 1, L1 5, GIoU 2.

``model.transformer.enc_rpe`` puts iRPE in every encoder self-attention (DETR-with-iRPE), e.g.
``"rpe-2.0-product-ctx-1-k"``; None is plain DETR.
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from fpt.modeling.detr import (
    DETR,
    HungarianMatcher,
    PositionEmbeddingSine,
    SetCriterion,
    Transformer,
)

model = L(DETR)(
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
        out_features=["res5"],
        freeze_at=2,
    ),
    in_feature="res5",
    transformer=L(Transformer)(
        d_model=256,
        nhead=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=2048,
        dropout=0.1,
        enc_rpe=None,
        use_checkpoint=False,  # True: activation checkpointing (less memory, one more forward)
    ),
    position_encoding=L(PositionEmbeddingSine)(num_pos_feats=128, normalize=True),
    num_classes=80,
    num_queries=100,
    criterion=L(SetCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0),
        eos_coef=0.1,
    ),
    loss_weights={"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
    aux_loss=True,
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    input_format="RGB",
)
