"""Fast COCO evaluation (``COCOeval_opt``) without detectron2's compiled ops.

What: when ``detectron2._C`` is missing, ``COCOEvaluator(use_fast_impl=True)`` (the default)
evaluates with :class:`COCOeval_opt`, built as detectron2's own: pycocotools' ``COCOeval`` in
which only the two slow loops, per-image matching (``evaluateImg``) and ``accumulate``, run in
C++ — faster_coco_eval's ports of detectron2's ``_C.COCOevalEvaluateImages`` and
``_C.COCOevalAccumulate``. Everything that reads the annotations (``_prepare``, IoU and OKS,
parameters, ``summarize``) is pycocotools' own code, so the fast path reads the same fields,
raises the same errors and gives the same numbers as pycocotools. When an annotation lacks a
field the C++ matcher reads (``area``/``iscrowd`` of a ground truth, ``area``/``score`` of a
detection), the matching runs in pycocotools' Python instead, which raises its usual error; so
it does for keypoints with ``useCats=0`` (pycocotools computes no OKS there, which the C++
matcher does not accept). tests/test_compat_fast_eval.py compares both on detectron2's edge cases.
Why: detectron2's ``COCOeval_opt`` (evaluation/fast_eval_api.py) calls ``_C.COCOevalEvaluateImages``
and ``_C.COCOevalAccumulate``, which the Python-only install lacks. faster_coco_eval's own
``COCOeval`` is no drop-in: it crashes on keypoints given pycocotools' ``COCO``
(``cat_img_map``), evaluates other categories for keypoints, and accepts ground truth without
``area``/``iscrowd`` where pycocotools raises.
When it can go: never for the Python-only install; with a compiled detectron2 it steps aside.
"""

import copy
import logging
import time

import numpy as np
from faster_coco_eval import faster_eval_api_cpp as _fast_cpp
from pycocotools.cocoeval import COCOeval

from . import c_ops

logger = logging.getLogger(__name__)

# fields the C++ matcher reads; pycocotools' evaluateImg raises KeyError on a missing one
_GT_FIELDS = ("id", "area", "iscrowd", "ignore")
_DT_FIELDS = ("id", "area", "score")


def _dataset(groups):
    dataset = _fast_cpp.Dataset()
    for (image_id, category_id), anns in groups.items():
        for ann in anns:
            dataset.append_ref(image_id, category_id, ann)
    return dataset


def _all_have(groups, fields):
    return all(f in ann for anns in groups.values() for ann in anns for f in fields)


class COCOeval_opt(COCOeval):
    """pycocotools' ``COCOeval`` with ``evaluateImg``/``accumulate`` in C++ (faster_coco_eval).

    Same interface, numbers and errors as pycocotools' ``COCOeval`` (``evaluate``,
    ``accumulate``, ``summarize``, ``params``, ``eval``, ``stats``)."""

    _evalImgs_cpp = None

    def evaluate(self):
        tic = time.time()
        p = self.params
        if p.useSegm is not None:
            p.iouType = "segm" if p.useSegm == 1 else "bbox"
        logger.info("Evaluate annotation type *%s*", p.iouType)
        p.imgIds = list(np.unique(p.imgIds))
        if p.useCats:
            p.catIds = list(np.unique(p.catIds))
        p.maxDets = sorted(p.maxDets)
        self.params = p

        self._prepare()
        catIds = p.catIds if p.useCats else [-1]
        if p.iouType == "segm" or p.iouType == "bbox":
            computeIoU = self.computeIoU
        elif p.iouType == "keypoints":
            computeIoU = self.computeOks
        self.ious = {
            (imgId, catId): computeIoU(imgId, catId) for imgId in p.imgIds for catId in catIds
        }
        maxDet = p.maxDets[-1]
        self._evalImgs_cpp = None
        # pycocotools' computeOks ignores useCats=0 (it looks up category -1: no OKS at all),
        # which the C++ matcher does not accept
        keypoints_without_cats = p.iouType == "keypoints" and not p.useCats
        if (
            not keypoints_without_cats
            and _all_have(self._gts, _GT_FIELDS)
            and _all_have(self._dts, _DT_FIELDS)
        ):
            ious = [[self.ious[imgId, catId] for catId in catIds] for imgId in p.imgIds]
            self._evalImgs_cpp = _fast_cpp.COCOevalEvaluateImages(
                p.areaRng,
                maxDet,
                p.iouThrs,
                ious,
                _dataset(self._gts),
                _dataset(self._dts),
                p.imgIds,
                p.catIds,
                bool(p.useCats),
            )
        else:  # pycocotools' matcher (and its KeyError for a missing field)
            self.evalImgs = [
                self.evaluateImg(imgId, catId, areaRng, maxDet)
                for catId in catIds
                for areaRng in p.areaRng
                for imgId in p.imgIds
            ]
        self._paramsEval = copy.deepcopy(self.params)
        logger.info("COCOeval_opt.evaluate() finished in %.2f seconds.", time.time() - tic)

    def accumulate(self, p=None):
        if self._evalImgs_cpp is None or p is not None:
            if self._evalImgs_cpp is not None:  # other parameters: pycocotools needs evalImgs
                pe = self._paramsEval
                self.evalImgs = [
                    self.evaluateImg(imgId, catId, areaRng, pe.maxDets[-1])
                    for catId in (pe.catIds if pe.useCats else [-1])
                    for areaRng in pe.areaRng
                    for imgId in pe.imgIds
                ]
            return super().accumulate(p)
        tic = time.time()
        evaluated = _fast_cpp.COCOevalAccumulate(self._paramsEval, self._evalImgs_cpp)
        counts = list(evaluated["counts"])
        self.params.catIds = self.params.catIds if self.params.useCats == 1 else [-1]
        self.eval = {
            "params": self.params,
            "counts": counts,
            "date": evaluated.get("date", time.strftime("%Y-%m-%d %H:%M:%S")),
            # precision, scores: T x R x K x A x M; recall: T x K x A x M
            "precision": np.asarray(evaluated["precision"], dtype=float).reshape(counts),
            "recall": np.asarray(evaluated["recall"], dtype=float).reshape(counts[:1] + counts[2:]),
            "scores": np.asarray(evaluated["scores"], dtype=float).reshape(counts),
        }
        logger.info("COCOeval_opt.accumulate() finished in %.2f seconds.", time.time() - tic)


def evaluate_predictions_on_coco(coco_gt, coco_results, iou_type, use_fast_impl=True, **kwargs):
    """detectron2's ``coco_evaluation._evaluate_predictions_on_coco`` with the fast
    (``COCOeval_opt``) or the pycocotools path, on either detectron2: 0.6 takes
    ``use_fast_impl=``, main ``cocoeval_fn=`` (told apart by the signature). ``kwargs`` go through
    (``kpt_oks_sigmas``, ``img_ids``, ...)."""
    import inspect

    from detectron2.evaluation import coco_evaluation

    evaluate = coco_evaluation._evaluate_predictions_on_coco
    if "cocoeval_fn" in inspect.signature(evaluate).parameters:
        kwargs["cocoeval_fn"] = coco_evaluation.COCOeval_opt if use_fast_impl else COCOeval
    else:
        kwargs["use_fast_impl"] = use_fast_impl
    return evaluate(coco_gt, coco_results, iou_type, **kwargs)


def apply():
    if c_ops.has_compiled_ops():
        return
    import detectron2.evaluation.coco_evaluation as coco_evaluation
    import detectron2.evaluation.fast_eval_api as fast_eval_api

    original = fast_eval_api.COCOeval_opt
    fast_eval_api.COCOeval_opt = COCOeval_opt
    coco_evaluation.COCOeval_opt = COCOeval_opt
    # detectron2 main binds it as a default argument too: cocoeval_fn=COCOeval_opt
    evaluate = coco_evaluation._evaluate_predictions_on_coco
    if evaluate.__defaults__:
        evaluate.__defaults__ = tuple(
            COCOeval_opt if d is original else d for d in evaluate.__defaults__
        )
