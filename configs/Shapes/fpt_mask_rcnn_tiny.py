"""Quick start for FPT: a ResNet-18-FPT Mask R-CNN trained from scratch on the synthetic shapes set.

Same data, schedule and heads as ``mask_rcnn_R_18_FPN_tiny.py``, with the FPT neck (64 channels,
ST + GT + RT) in place of FPN, for a side-by-side comparison on CPU.
"""

from detectron2.model_zoo import get_config

from ..common.data.shapes import dataloader
from ..common.models.mask_rcnn_fpt_tiny import model
from ..common.shapes_schedule import lr_multiplier, train

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.02

train.output_dir = "output/shapes_fpt_mask_rcnn_tiny"
