"""ViTDet Mask R-CNN, ViT-B, LVIS v1, 100 epochs LSJ, as upstream's
``projects/ViTDet/configs/LVIS/mask_rcnn_vitdet_b_100ep.py`` (paper: 40.2 box AP, 38.2 mask AP):
the COCO recipe with repeat-factor sampling (0.001), sigmoid cross-entropy with the federated
loss, 1203 classes, score threshold 0.02, 300 detections per image, LVISEvaluator.
"""

from ..common.data.lvis import lvis_loader
from ..common.models.lvis_heads import make_heads_lvis
from ..COCO.ViTDet.mask_rcnn_vitdet_b_100ep import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

lvis_loader(dataloader)
make_heads_lvis(model, score_thresh=0.02, fed_loss=True)

# 100 ep = 156250 iters * 64 images/iter / 100000 images/ep
train.max_iter = 156250
train.eval_period = 30000
lr_multiplier.scheduler.milestones = [138889, 150463]
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.warmup_length = 250 / train.max_iter
optimizer.lr = 2e-4
train.output_dir = "output/lvis_mask_rcnn_vitdet_b_100ep"
