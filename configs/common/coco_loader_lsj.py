"""COCO loaders with large-scale jitter (LSJ), as ViTDet: flip, resize to a random scale in
[0.1, 2.0] of 1024 keeping the aspect ratio, crop at most 1024x1024 (the model pads each batch
to 1024x1024: ``SimpleFeaturePyramid(square_pad=1024)``); test: longest side 1024.

Upstream's ``ResizeScale`` + ``FixedSizeCrop`` are one ``ResizeScaleCrop`` here: the same random
draws, boxes and masks, the image resampled only where the crop keeps it (2x faster; pixels equal
up to rounding, see fpt/data/transforms.py)."""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from fpt.data.transforms import ResizeScaleCrop

image_size = 1024
dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),  # flip first
    L(ResizeScaleCrop)(
        min_scale=0.1, max_scale=2.0, target_height=image_size, target_width=image_size, pad=False
    ),  # = ResizeScale(...) + FixedSizeCrop(crop_size=(image_size, image_size), pad=False)
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.total_batch_size = 64
# boxes are recomputed from the (cropped) masks
dataloader.train.mapper.recompute_boxes = True

dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size),
]
