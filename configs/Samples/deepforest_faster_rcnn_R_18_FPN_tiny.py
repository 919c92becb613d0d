"""A tiny ResNet-18-FPN Faster R-CNN trained from scratch on the deepforest sample set (tree
crowns in aerial RGB images, 1 class; ``datasets/prepare_samples.py``), for the test-time
augmentation measurements on real photos (README).

Trains on the two large YELL crops (``deepforest_trees_train``, 853 trees) in random 256 x 256
crops with flips, and is evaluated on the two 400 x 400 images it never sees
(``deepforest_trees_val``, 98 trees) at their own size. The model, optimizer and schedule are
``configs/Shapes/mask_rcnn_R_18_FPN_tiny.py``'s without the mask head, 100 iterations of batch 4.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from ..Shapes.mask_rcnn_R_18_FPN_tiny import dataloader, lr_multiplier, model, optimizer, train

roi = model.roi_heads
roi.num_classes = 1
roi.mask_in_features = None
roi.mask_pooler = None
roi.mask_head = None
roi.box_predictor.test_topk_per_image = 200  # up to ~60 trees an image
model.proposal_generator.pre_nms_topk = (600, 1000)
model.proposal_generator.post_nms_topk = (300, 300)

dataloader.train.dataset.names = "deepforest_trees_train"
dataloader.train.mapper.use_instance_mask = False
dataloader.train.mapper.augmentations = [
    L(T.RandomCrop)(crop_type="absolute", crop_size=(256, 256)),
    L(T.RandomFlip)(horizontal=True),
    L(T.RandomFlip)(horizontal=False, vertical=True),
]
dataloader.test.dataset.names = "deepforest_trees_val"
dataloader.test.mapper.use_instance_mask = False

train.output_dir = "output/samples_deepforest_faster_rcnn_R_18_FPN_tiny"
train.max_iter = 100
train.eval_period = 100
train.checkpointer.period = 100
train.best_checkpoint.metric = ""
train.visualize.num_images = 0
