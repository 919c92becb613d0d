"""Mask R-CNN R-50-FPT, 1x, fast preset: inference 2.4x FPN's time on CPU at 800x1333 (global FPT:
21.7x; target 3x).

Every transformer and every level pair of the paper's model is kept; three choices make it cheap:
the locality-constrained Grounding Transformer (LGT, a 3x3 coarse window) on every level instead
of global GT; the Self-Transformer's keys/values average-pooled to P5's size (kv_pool 8/4/2/1 at
P2..P5); and a 1x1 fusion conv (the paper's 3x3 conv over 5 x 256 channels at P2 is the neck's
largest cost). Measured by ``benchmarks/fpt_speed_memory.py`` (README, FPT section).
"""

from .mask_rcnn_R_50_FPT_1x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.update(
    grounding_mode="local",
    kv_pool=[8, 4, 2, 1],
    fusion_kernel_size=1,
)
train.output_dir = "output/mask_rcnn_R_50_FPT_fast_1x"

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=None,
    source="our fast preset: no paper counterpart",
    weights=None,
    convert=None,
    note="the FPT authors released no trained weights",
)
