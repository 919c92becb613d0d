"""A tiny ResNet-18-FPN Mask R-CNN fitted to the labelme sample set (3 PASCAL VOC photos, 12
polygon instances, 20 classes; ``datasets/prepare_samples.py``), for the test-time augmentation
measurements on real photos (README).

Three photos hold no held-out split: it is trained and evaluated on the same images (shortest
edge 160), so its AP measures how well it fits them, and TTA's effect on a fitted model; it says
nothing about new photos. The model, optimizer and schedule are
``configs/Shapes/mask_rcnn_R_18_FPN_tiny.py``'s with 20 classes, 100 iterations of batch 3.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from ..Shapes.mask_rcnn_R_18_FPN_tiny import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.num_classes = 20

dataloader.train.dataset.names = "labelme_voc"
dataloader.train.total_batch_size = 3
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(144, 160, 176), max_size=240, sample_style="choice"),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.test.dataset.names = "labelme_voc"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=160, max_size=240),
]

train.max_iter = 100
train.eval_period = 100
train.checkpointer.period = 100
train.output_dir = "output/samples_labelme_mask_rcnn_R_18_FPN_tiny"
train.best_checkpoint.metric = ""
train.visualize.num_images = 0
