"""COCO loaders with large-scale jitter (LSJ), as ViTDet: flip, resize to a random scale in
[0.1, 2.0] of 1024 keeping the aspect ratio, crop at most 1024x1024 (the model pads each batch
to 1024x1024: ``SimpleFeaturePyramid(square_pad=1024)``); test: longest side 1024."""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

image_size = 1024
dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),  # flip first
    L(T.ResizeScale)(
        min_scale=0.1, max_scale=2.0, target_height=image_size, target_width=image_size
    ),
    L(T.FixedSizeCrop)(crop_size=(image_size, image_size), pad=False),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.total_batch_size = 64
# boxes are recomputed from the (cropped) masks
dataloader.train.mapper.recompute_boxes = True

dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size),
]
