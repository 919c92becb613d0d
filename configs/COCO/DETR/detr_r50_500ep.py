"""DETR R50, 500 epochs (lr drop at 400, from the DETR paper): 42.0 box AP (official model
zoo). Recipe as ``detr_r50_300ep.py``."""

from ...common.detr_schedule import detr_schedule
from .detr_r50_300ep import dataloader, model, optimizer, train

train.max_iter, lr_multiplier = detr_schedule(epochs=500, drop_epoch=400)
train.output_dir = "output/detr_r50_500ep"

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=dict(box=42.0),
    source="facebookresearch/detr model zoo, DETR R50",
    weights="https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth",
    convert="python tools/convert_detr_checkpoint.py detr-r50-e632da11.pth detr_r50_500ep.pth",
)
