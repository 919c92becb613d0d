"""COCO loaders with DETR's augmentations (``fpt.data.detr_mapper``), batch 16, RGB, boxes only.

Train: horizontal flip; then with p = 0.5 a resize of the shorter side to one of 480, 512, ...,
800 (longer side <= 1333), or a resize to 400/500/600, a 384-600 px random crop and that resize.
Images without annotations are kept and batches are not grouped by aspect ratio (both as
official DETR). Test: shorter side 800, longer side <= 1333.
Sizes are computed as DETR does (``DetrResize``).
"""

from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import COCOEvaluator

from fpt.data.detr_mapper import DETR_TRAIN_SIZES, DetrDatasetMapper, DetrResize, RandomSelect

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train", filter_empty=False),
    mapper=L(DetrDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.RandomFlip)(horizontal=True),
            L(RandomSelect)(
                first=L(DetrResize)(short_edge_length=DETR_TRAIN_SIZES, max_size=1333),
                second=[
                    L(DetrResize)(short_edge_length=(400, 500, 600)),
                    L(T.RandomCrop)(crop_type="absolute_range", crop_size=(384, 600)),
                    L(DetrResize)(short_edge_length=DETR_TRAIN_SIZES, max_size=1333),
                ],
                p=0.5,
            ),
        ],
        image_format="RGB",
    ),
    total_batch_size=16,
    # official DETR batches images in sampled order; detectron2's default groups them by aspect
    # ratio (every batch all-portrait or all-landscape), which pads less, so that position
    # encodings and iRPE buckets see other inputs than in the runs behind the reference APs
    aspect_ratio_grouping=False,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(DetrDatasetMapper)(
        is_train=False,
        augmentations=[L(DetrResize)(short_edge_length=800, max_size=1333)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}")
