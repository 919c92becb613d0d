"""Mask R-CNN R-50-FPT on LVIS v1, detectron2's LVIS recipe
(``configs/LVISv1-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml``) with the FPT neck of
``COCO/FPT/mask_rcnn_R_50_FPT_1x.py``: repeat-factor sampling (0.001), softmax cross-entropy (no
federated loss, as upstream's R-50-FPN), 1203 classes, score threshold 0.0001, 300 detections per
image, 180k iterations of 16 images (steps at 120k and 160k), LVISEvaluator.
"""

from ..common.data.lvis import lvis_loader
from ..common.models.lvis_heads import make_heads_lvis
from ..COCO.FPT.mask_rcnn_R_50_FPT_1x import dataloader, lr_multiplier, model, optimizer, train

lvis_loader(dataloader)
make_heads_lvis(model, score_thresh=0.0001, fed_loss=False)

# 180000 iters * 16 images/iter / 100000 images/ep ~ 28.8 epochs
train.max_iter = 180000
lr_multiplier.scheduler.milestones = [120000, 160000]
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.warmup_length = 1000 / train.max_iter
train.output_dir = "output/lvis_mask_rcnn_R_50_FPT_1x"
