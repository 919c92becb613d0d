"""``--run-eval``: the exported and the eager model evaluated on the config's test set, so that
their AP can be compared (detectron2's ``tools/deploy/export_model.py --run-eval``)."""

import logging

from ..config import RunConfig
from ..predictor import Predictor
from .runner import ExportedModel

__all__ = ["evaluate_exported"]

logger = logging.getLogger(__name__)


class _Subset:
    """An evaluator limited to the images it saw (COCOEvaluator otherwise scores every image of
    the dataset, the unseen ones as misses)."""

    def __init__(self, evaluator, image_ids):
        self.evaluator, self.image_ids = evaluator, image_ids

    def reset(self):
        self.evaluator.reset()

    def process(self, inputs, outputs):
        self.evaluator.process(inputs, outputs)

    def evaluate(self):
        from detectron2.evaluation import COCOEvaluator

        if isinstance(self.evaluator, COCOEvaluator):
            return self.evaluator.evaluate(img_ids=self.image_ids)
        return self.evaluator.evaluate()


def _test_set(cfg, max_images):
    """(dataset dicts, mapper, evaluator factory) of the config's first test set."""
    run = RunConfig.of(cfg)
    dataset, mapper = run.test_set()
    if max_images:
        dataset = dataset[:max_images]
    return dataset, mapper, run.build_evaluator


def evaluate_exported(cfg, exported, device=None, max_images=None, eager=True):
    """
    Evaluate an exported model (and the eager one) on the config's test set.

    Args:
        cfg: the config the model was exported from (its test set, mapper and evaluator; the
            eager model and its weights).
        exported (str): the export directory or its model file.
        device (str or None): where to run both.
        max_images (int or None): only the first N test images (a quick check).
        eager (bool): evaluate the eager model too.

    Returns:
        dict: ``{"exported": results, "eager": results}`` (detectron2's evaluator results, e.g.
        ``{"bbox": {"AP": ...}, "segm": {...}}``).
    """
    from detectron2.data import build_detection_test_loader

    from ..evaluation import evaluate

    dataset, mapper, make_evaluator = _test_set(cfg, max_images)
    loader = build_detection_test_loader(dataset=dataset, mapper=mapper, num_workers=0)
    image_ids = [d["image_id"] for d in dataset if "image_id" in d] if max_images else None
    models = {"exported": ExportedModel(exported, device)}
    if eager:
        models["eager"] = Predictor(cfg, device=device).model
    results = {}
    for name, model in models.items():
        evaluator = make_evaluator()
        if image_ids:
            evaluator = _Subset(evaluator, image_ids)
        results[name] = evaluate(model, loader, evaluator, name=f"{name} model")
    return results
