"""Optimizers: detectron2's SGD, plus AdamW whose parameter groups support a per-parameter
lr factor (``params.lr_factor_func``, e.g. layer-wise decay) as in newer detectron2."""

import torch
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from fpt.solver import get_default_optimizer_params

SGD = get_config("common/optim.py").SGD

AdamW = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(
        # params.model is set to the model object before instantiating the optimizer
        base_lr="${..lr}",
        weight_decay_norm=0.0,
    ),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.1,
)
