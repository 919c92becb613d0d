"""A tiny LazyConfig Mask R-CNN (ResNet-18-FPN, 32 channels, 128 px test size) for the demo and
predictor tests: detectron2's ``common/models/mask_rcnn_fpn.py`` made small. Its test dataset is
``coco_2017_val`` (metadata only), so that category ids map back to COCO's (1..90)."""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

model = get_config("common/models/mask_rcnn_fpn.py").model
dataloader = get_config("common/data/coco.py").dataloader
train = get_config("common/train.py").train

channels = 32
model.backbone.bottom_up.stages.depth = 18
del model.backbone.bottom_up.stages.stride_in_1x1  # BasicBlock has no 1x1 conv
model.backbone.out_channels = channels
model.proposal_generator.head.in_channels = channels
model.proposal_generator.post_nms_topk = (100, 50)
roi = model.roi_heads
roi.box_head.input_shape = ShapeSpec(channels=channels, height=7, width=7)
roi.box_head.fc_dims = [64]
roi.box_predictor.input_shape = ShapeSpec(channels=64)
roi.box_predictor.test_topk_per_image = 20
roi.mask_head.input_shape = ShapeSpec(channels=channels, height=14, width=14)
roi.mask_head.conv_dims = [channels]

dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=128, max_size=200)
]
train.device = "cpu"
