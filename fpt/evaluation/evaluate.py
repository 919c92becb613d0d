"""Run evaluators with a progress bar; save results as JSON and log per-category AP tables."""

import json
import logging
import os

from tqdm import tqdm

from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

__all__ = ["evaluate", "save_results"]

logger = logging.getLogger(__name__)


class _Progress:
    """A data loader wrapped in a tqdm bar (main process only); keeps ``len``."""

    def __init__(self, loader, desc):
        self.loader, self.desc = loader, desc

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        yield from tqdm(
            self.loader,
            total=len(self.loader),
            desc=self.desc,
            unit="img",
            disable=not comm.is_main_process(),
            leave=False,
            dynamic_ncols=True,
        )


def save_results(results, path):
    """Write a (nested) dict of metrics as JSON (main process only); returns the path."""
    if comm.is_main_process():
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
    return path


def evaluate(model, data_loader, evaluator, name="evaluation", results_json=None):
    """``inference_on_dataset`` with a tqdm bar; logs the AP tables (COCOEvaluator prints the
    per-category ones) and saves the results to ``results_json`` if given.

    Returns:
        dict: e.g. ``{"bbox": {"AP": ..., "AP-circle": ...}, "segm": {...}}`` (main process).
    """
    results = inference_on_dataset(model, _Progress(data_loader, name), evaluator)
    if comm.is_main_process() and results:
        logger.info(f"Evaluation results for {name} in csv format:")
        print_csv_format(results)
        if results_json:
            save_results(results, results_json)
            logger.info(f"Saved evaluation results to {results_json}")
    return results
