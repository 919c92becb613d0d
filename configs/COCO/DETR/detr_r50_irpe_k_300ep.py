"""DETR R50 with iRPE ``rpe-2.0-product-ctx-1-k`` in every encoder self-attention (contextual,
product method, 9x9 buckets, shared across heads, on keys), 300 epochs (lr drop at 200):
42.2 box AP (AP50 62.3, AP75 44.6; microsoft/Cream DETR-with-iRPE). Sine absolute position
encoding kept. Recipe as ``detr_r50_300ep.py``; the 15,552 table parameters get lr 1e-4 and
weight decay 1e-4."""

from .detr_r50_300ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.enc_rpe = "rpe-2.0-product-ctx-1-k"
train.output_dir = "output/detr_r50_irpe_k_300ep"

# what this config aims at and where its weights come from (tools/model_zoo.py)
model_card = dict(
    reference_ap=dict(box=42.2),
    source="microsoft/Cream iRPE/DETR-with-iRPE README, rpe-2.0-product-ctx-1-k, 300 epochs",
    weights=None,
    convert=None,
    note=(
        "wkcn/iRPE-model-zoo release 1.0 holds the 150-epoch checkpoints only; a 300-epoch one "
        "converts with tools/convert_detr_checkpoint.py"
    ),
)
