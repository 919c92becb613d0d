"""Fast COCO evaluation (``COCOeval_opt``) without detectron2's compiled ops.

What: when ``detectron2._C`` is missing, ``COCOEvaluator(use_fast_impl=True)`` (the default)
evaluates through ``faster_coco_eval``'s C++ ``COCOeval_faster``, which computes the same
numbers as pycocotools (tests/compat check it) several times faster.
Why: detectron2's ``COCOeval_opt`` (evaluation/fast_eval_api.py) calls ``_C.COCOevalEvaluateImages``
and ``_C.COCOevalAccumulate``, which the Python-only install lacks.
When it can go: never for the Python-only install; with a compiled detectron2 it steps aside.
"""
from faster_coco_eval import COCOeval_faster

from . import c_ops


class COCOeval_opt(COCOeval_faster):
    """pycocotools' ``COCOeval`` interface (``evaluate/accumulate/summarize``, ``params``,
    ``stats``, ``eval``) computed by faster_coco_eval. Accepts pycocotools ``COCO`` objects."""

    def __init__(self, cocoGt=None, cocoDt=None, iouType="segm"):
        # print the summary table on stdout, as pycocotools does
        super().__init__(cocoGt, cocoDt, iouType, print_function=print)


def apply():
    if c_ops.has_compiled_ops():
        return
    import detectron2.evaluation.coco_evaluation as coco_evaluation
    import detectron2.evaluation.fast_eval_api as fast_eval_api

    fast_eval_api.COCOeval_opt = COCOeval_opt
    coco_evaluation.COCOeval_opt = COCOeval_opt
