"""Cityscapes semantic segmentation, R-50 + FPT with the locality-constrained Grounding Transformer.

detectron2's ``SemanticSegmentor`` with ``SemSegFPNHead`` on FPT's P2..P5; 512x1024 crops of
multi-scale images, batch 8, 90k iterations, poly LR (detectron2's Cityscapes recipe). The
paper's 82.2 mIoU model uses a dilated ResNet-101 and its unified pyramid (UFP), not built here.
Datasets: ``cityscapes_fine_sem_seg_{train,val}`` under ``$DETECTRON2_DATASETS/cityscapes``.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import SemSegEvaluator
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler
from omegaconf import OmegaConf

from ..common.models.semantic_fpt import model

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="cityscapes_fine_sem_seg_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=[512, 768, 1024, 1280, 1536, 1792, 2048],
                max_size=4096,
                sample_style="choice",
            ),
            L(T.RandomCrop_CategoryAreaConstraint)(
                crop_type="absolute",
                crop_size=(512, 1024),
                single_category_max_area=0.75,
                ignored_category=255,
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
    ),
    total_batch_size=8,
    num_workers=4,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="cityscapes_fine_sem_seg_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=1024, max_size=2048)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)
dataloader.evaluator = L(SemSegEvaluator)(dataset_name="${..test.dataset.names}")

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.01
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(PolynomialDecayParamScheduler)(base_value=1.0, power=0.9),
    warmup_length=1000 / 90000,
    warmup_factor=0.001,
)
train = get_config("common/train.py").train
train.max_iter = 90000
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.output_dir = "output/cityscapes_semantic_R_50_FPT"

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=None,
    source="the paper's 82.2 mIoU is a dilated R-101 + UFP model, not this config",
    weights=None,
    convert=None,
    note="the FPT authors released no trained weights",
)
