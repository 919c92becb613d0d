"""Utilities: model analysis (parameters, FLOPs)."""

from .analysis import analyze_model, format_complexity_table, sdpa_flop_jit

__all__ = ["analyze_model", "format_complexity_table", "sdpa_flop_jit"]
