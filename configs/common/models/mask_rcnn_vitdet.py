"""Mask R-CNN with a ViTDet backbone (ViT-B + Simple Feature Pyramid), as upstream
``projects/ViTDet/configs/common/models/mask_rcnn_vitdet.py``: RPN head with 2 convs, 4conv1fc
box head and 4-conv mask head with channels-first LayerNorm, RGB input, square padding to 1024.
"""

from functools import partial

import torch.nn as nn
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from fpt.modeling import SimpleFeaturePyramid, ViT

model = get_config("common/models/mask_rcnn_fpn.py").model

# ImageNet mean/std in RGB, 0-255
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"

# ViT-B
embed_dim, depth, num_heads, dp = 768, 12, 12, 0.1
model.backbone = L(SimpleFeaturePyramid)(
    net=L(ViT)(
        img_size=1024,
        patch_size=16,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        drop_path_rate=dp,
        window_size=14,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        # blocks 2, 5, 8, 11 use global attention
        window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10],
        residual_block_indexes=[],
        use_rel_pos=True,
        out_feature="last_feat",
    ),
    in_feature="${.net.out_feature}",
    out_channels=256,
    scale_factors=(4.0, 2.0, 1.0, 0.5),
    top_block=L(LastLevelMaxPool)(),
    norm="LN",
    square_pad=1024,
)

model.roi_heads.box_head.conv_norm = model.roi_heads.mask_head.conv_norm = "LN"

# 2 convs in the RPN head
model.proposal_generator.head.conv_dims = [-1, -1]

# 4conv1fc box head (the mask head keeps 4 convs + deconv)
model.roi_heads.box_head.conv_dims = [256, 256, 256, 256]
model.roi_heads.box_head.fc_dims = [1024]
