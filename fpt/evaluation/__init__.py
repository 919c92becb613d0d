"""Evaluation helpers: evaluator runs with a progress bar, result JSON, plots, visualizations."""

from .evaluate import evaluate, save_results
from .plots import plot_metrics, read_metrics
from .visualize import visualize_predictions

__all__ = ["evaluate", "save_results", "plot_metrics", "read_metrics", "visualize_predictions"]
