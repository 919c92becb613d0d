"""Utilities every layer may use: model analysis (parameters, FLOPs), the device to run on
(:mod:`.device`), and the text of one-line errors (:mod:`.text`)."""

from .analysis import analyze_model, format_complexity_table, sdpa_flop_jit

__all__ = ["analyze_model", "format_complexity_table", "sdpa_flop_jit"]
