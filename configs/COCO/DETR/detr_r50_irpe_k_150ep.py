"""DETR R50 with iRPE ``rpe-2.0-product-ctx-1-k``, 150 epochs (lr drop at 100): 41.0 box AP
(AP50 61.5; microsoft/Cream DETR-with-iRPE; 40.9 with ``rpe-1.9-product-ctx-1-k``). Recipe as
``detr_r50_300ep.py``."""

from ...common.detr_schedule import detr_schedule
from .detr_r50_irpe_k_300ep import dataloader, model, optimizer, train

train.max_iter, lr_multiplier = detr_schedule(epochs=150, drop_epoch=100)
train.output_dir = "output/detr_r50_irpe_k_150ep"

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=dict(box=41.0),
    source="microsoft/Cream iRPE/DETR-with-iRPE README, rpe-2.0-product-ctx-1-k, 150 epochs",
    weights=(
        "https://github.com/wkcn/iRPE-model-zoo/releases/download/1.0/rpe-2.0-product-ctx-1-k.pth"
    ),
    convert=(
        "python tools/convert_detr_checkpoint.py rpe-2.0-product-ctx-1-k.pth "
        "detr_r50_irpe_k_150ep.pth"
    ),
)
