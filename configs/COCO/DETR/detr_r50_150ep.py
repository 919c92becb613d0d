"""DETR R50, 150 epochs (lr drop at 100): official DETR's 150-epoch log reaches 39.5 box AP
(AP50 60.3). Recipe as ``detr_r50_300ep.py``."""

from ...common.detr_schedule import detr_schedule
from .detr_r50_300ep import dataloader, model, optimizer, train

train.max_iter, lr_multiplier = detr_schedule(epochs=150, drop_epoch=100)
train.output_dir = "output/detr_r50_150ep"

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=dict(box=39.5),
    source="official DETR's 150-epoch training log (facebookresearch/detr README)",
    weights=None,
    convert=None,
    note="no 150-epoch checkpoint was published",
)
