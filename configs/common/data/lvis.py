"""LVIS v1 loaders: detectron2's ``common/data/coco.py`` on ``lvis_v1_train`` / ``lvis_v1_val``,
repeat-factor sampling (threshold 0.001, resumable: ``fpt.data.samplers.RepeatFactorSampler``)
and detectron2's ``LVISEvaluator`` with up to 300 detections per image, as upstream's
``projects/ViTDet/configs/LVIS`` and ``configs/LVISv1-InstanceSegmentation``.

``lvis_loader(dataloader)`` points another config's loaders (e.g. ViTDet's LSJ loader) at LVIS.
Data: ``$DETECTRON2_DATASETS/lvis/lvis_v1_{train,val}.json`` with COCO 2017's images in
``$DETECTRON2_DATASETS/coco/{train2017,val2017}`` (see README.md, "LVIS").
"""

from detectron2.config import LazyCall as L
from detectron2.evaluation import LVISEvaluator
from detectron2.model_zoo import get_config

from fpt.data.samplers import RepeatFactorSampler


def lvis_loader(dataloader, train="lvis_v1_train", test="lvis_v1_val", repeat_thresh=0.001):
    """Make ``dataloader`` (``train``, ``test``, ``evaluator`` nodes) load the LVIS-format sets
    ``train`` / ``test`` with repeat-factor sampling and evaluate with ``LVISEvaluator`` (in
    place; returns it)."""
    dataloader.train.dataset.names = train
    dataloader.train.sampler = L(RepeatFactorSampler)(repeat_thresh=repeat_thresh)
    dataloader.test.dataset.names = test
    dataloader.evaluator = L(LVISEvaluator)(
        dataset_name="${..test.dataset.names}", max_dets_per_image=300
    )
    return dataloader


dataloader = lvis_loader(get_config("common/data/coco.py").dataloader)
