"""``vitdet_mask_rcnn_tiny.py`` on the LVIS-format shapes set (``fpt.data.lvis``: federated,
long-tailed annotations), with LVIS's recipe (``configs/LVIS/mask_rcnn_vitdet_b_100ep.py``) at
its scale: repeat-factor sampling (threshold 0.1: the rare class is on 6 of 256 images, 2x), the
federated sigmoid loss over 2 of the 3 classes, score threshold 0.02, LVISEvaluator.
"""

from ..common.data.lvis import lvis_loader
from ..common.models.lvis_heads import make_heads_lvis
from .vitdet_mask_rcnn_tiny import dataloader, lr_multiplier, model, optimizer, train

lvis_loader(dataloader, "shapes_lvis_train", "shapes_lvis_val", repeat_thresh=0.1)
make_heads_lvis(model, num_classes=3, score_thresh=0.02, fed_loss=True, fed_loss_num_classes=2)

train.output_dir = "output/shapes_vitdet_mask_rcnn_lvis_tiny"
