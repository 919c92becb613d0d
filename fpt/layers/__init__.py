"""Small reusable building blocks shared by our models."""

from .norm import LayerNorm
from .drop_path import DropPath, drop_path
from .rel_pos import (
    add_decomposed_rel_pos,
    decomposed_rel_pos_bias,
    get_abs_pos,
    get_rel_pos,
    window_partition,
    window_unpartition,
)

__all__ = [
    "LayerNorm",
    "DropPath",
    "drop_path",
    "add_decomposed_rel_pos",
    "decomposed_rel_pos_bias",
    "get_abs_pos",
    "get_rel_pos",
    "window_partition",
    "window_unpartition",
]
from .mos_attention import MixtureWeights, MoSAttention, mos_attention  # noqa: E402
from .irpe import IRPE, IRPECross, RPESpec, build_rpe, parse_rpe_spec  # noqa: E402

__all__ += ["MixtureWeights", "MoSAttention", "mos_attention"]
__all__ += ["IRPE", "IRPECross", "RPESpec", "build_rpe", "parse_rpe_spec"]
