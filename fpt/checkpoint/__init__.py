"""Loading pre-trained weights that are not detectron2 checkpoints."""

from .errors import CheckpointError
from .vit_weights import (
    convert_to_model_state_dict,
    load_vit_pretrained,
    read_checkpoint,
    summarize_keys,
    vit_pretrained_state_dict,
)

__all__ = [
    "CheckpointError",
    "convert_to_model_state_dict",
    "load_vit_pretrained",
    "read_checkpoint",
    "summarize_keys",
    "vit_pretrained_state_dict",
]
