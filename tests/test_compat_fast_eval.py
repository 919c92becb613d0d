"""fpt.compat.fast_eval: ``COCOeval_opt`` gives pycocotools' numbers *and* errors.

Box, mask and keypoint evaluation on a small synthetic COCO set, in the edge cases that
detectron2's own fast-eval test covers (empty ground truth, changed parameters, every
annotation field left out of the ground truth or of the detections, one at a time).
"""

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import fpt  # noqa: F401
from fpt.compat.fast_eval import COCOeval_opt, evaluate_predictions_on_coco
from detectron2.evaluation import fast_eval_api
from faster_coco_eval.core import mask as mask_util

H, W, K = 160, 200, 17
IOU_TYPES = ("bbox", "segm", "keypoints")


def _keypoints(rng, x, y, w, h, visible):
    kps = []
    for _ in range(K):
        v = int(rng.rand() < visible) * 2
        kps += [float(x + rng.rand() * w), float(y + rng.rand() * h), v]
    return kps


def _dataset(seed=0, n_images=5):
    rng = np.random.RandomState(seed)
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": W, "height": H, "file_name": f"{i}.jpg"})
        for _ in range(rng.randint(1, 5)):
            x, y = rng.uniform(0, 120), rng.uniform(0, 90)
            bw, bh = rng.uniform(8, 75), rng.uniform(8, 65)
            cat = int(rng.randint(1, 3))
            kps = _keypoints(rng, x, y, bw, bh, visible=rng.choice([0.0, 0.7]))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh * 0.9,
                    "iscrowd": int(rng.rand() < 0.1),
                    "ignore": 0,
                    "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]],
                    "keypoints": kps,
                    "num_keypoints": sum(v > 0 for v in kps[2::3]),
                }
            )
            for _ in range(2):  # a close detection and a sloppy one
                jx, jy = rng.normal(0, bw * 0.15), rng.normal(0, bh * 0.15)
                dx, dy = x + jx, y + jy
                dw, dh = bw * rng.uniform(0.8, 1.2), bh * rng.uniform(0.8, 1.2)
                rle = mask_util.merge(
                    mask_util.frPyObjects(
                        [[dx, dy, dx + dw, dy, dx + dw, dy + dh, dx, dy + dh]], H, W
                    )
                )
                rle["counts"] = rle["counts"].decode()
                dkps = [v + rng.normal(0, 3) if j % 3 != 2 else 1.0 for j, v in enumerate(kps)]
                dets.append(
                    {
                        "image_id": i,
                        "category_id": cat if rng.rand() > 0.2 else 3 - cat,
                        "bbox": [dx, dy, dw, dh],
                        "score": float(rng.rand()),
                        "segmentation": rle,
                        "keypoints": dkps,
                    }
                )
    gt = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "ball"}],
    }
    return gt, dets


def _coco(gt, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        return coco_gt, coco_gt.loadRes(copy.deepcopy(dets))


def _run(cls, gt, dets, iou_type, params):
    """(error type name, None) or (None, coco_eval) for one evaluation."""
    coco_gt, coco_dt = _coco(gt, dets)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ev = cls(coco_gt, coco_dt, iou_type)
            for name, value in params.items():
                setattr(ev.params, name, value)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
    except Exception as e:  # compared between the two implementations
        return type(e).__name__, None
    return None, ev


def _experiments():
    gt, dets = _dataset()
    experiments = {"full": (gt, dets, {})}
    empty = copy.deepcopy(gt)
    empty["annotations"] = []
    experiments["empty_gt"] = (empty, dets, {})
    experiments["no_categories"] = (gt, dets, {"useCats": 0})
    experiments["no_ious"] = (gt, dets, {"iouThrs": []})
    experiments["no_rec_thrs"] = (gt, dets, {"recThrs": []})
    experiments["no_max_dets"] = (gt, dets, {"maxDets": []})
    experiments["one_max_det"] = (gt, dets, {"maxDets": [1]})
    experiments["no_area"] = (gt, dets, {"areaRng": [], "areaRngLbl": []})
    experiments["some_images"] = (gt, dets, {"imgIds": [2, 4]})
    experiments["one_category"] = (gt, dets, {"catIds": [2]})
    fields = (
        "id",
        "image_id",
        "category_id",
        "score",
        "area",
        "iscrowd",
        "ignore",
        "bbox",
        "segmentation",
        "keypoints",
        "num_keypoints",
    )
    for field in fields:
        g = copy.deepcopy(gt)
        for a in g["annotations"]:
            a.pop(field, None)
        experiments[f"omit_gt_{field}"] = (g, dets, {})
        d = [{k: v for k, v in x.items() if k != field} for x in dets]
        experiments[f"omit_dt_{field}"] = (gt, d, {})
    return {name: e for name, e in experiments.items() if _loads(*e[:2])}


def _loads(gt, dets):
    """pycocotools' COCO and loadRes accept the input (no id/image_id/category_id: they don't,
    before any evaluator is involved)."""
    try:
        _coco(gt, dets)
    except (KeyError, AssertionError):
        return False
    return True


EXPERIMENTS = _experiments()


@pytest.mark.parametrize("iou_type", IOU_TYPES)
@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_fast_eval_matches_pycocotools_numbers_and_errors(name, iou_type):
    gt, dets, params = EXPERIMENTS[name]
    ref_error, ref = _run(COCOeval, gt, dets, iou_type, params)
    fast_error, fast = _run(COCOeval_opt, gt, dets, iou_type, params)
    assert fast_error == ref_error
    if ref is None:
        return
    for key in ("precision", "recall", "scores"):
        assert fast.eval[key].shape == ref.eval[key].shape, key
        np.testing.assert_allclose(fast.eval[key], ref.eval[key], atol=1e-12, err_msg=key)
    assert fast.eval["counts"] == ref.eval["counts"]
    np.testing.assert_allclose(fast.stats, ref.stats, atol=1e-12)
    if name == "full":
        assert ref.stats[0] > 0.05  # a meaningful case, not all-zero


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_detectron2_evaluate_predictions_fast_path(iou_type):
    """The COCOEvaluator code path, keypoints included (it raised AttributeError before)."""
    gt, dets = _dataset(seed=1)
    stats = {}
    for fast in (True, False):
        coco_gt, _ = _coco(gt, dets)
        with contextlib.redirect_stdout(io.StringIO()):
            ev = evaluate_predictions_on_coco(
                coco_gt,
                copy.deepcopy(dets),
                iou_type,
                kpt_oks_sigmas=[0.05] * K if iou_type == "keypoints" else None,
                use_fast_impl=fast,
            )
        assert isinstance(ev, fast_eval_api.COCOeval_opt) == fast  # detectron2's own with _C
        stats[fast] = ev.stats
    assert stats[False][0] > 0.05
    np.testing.assert_allclose(stats[True], stats[False], atol=1e-12)


def test_detectron2_defaults_take_the_fast_path():
    """detectron2's own function called with its default arguments evaluates with the fast
    implementation in use (0.6: ``use_fast_impl=True``; main: the default ``cocoeval_fn``,
    bound when detectron2 was imported), and gives pycocotools' numbers."""
    from detectron2.evaluation import coco_evaluation

    gt, dets = _dataset(seed=2)
    coco_gt, _ = _coco(gt, dets)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = coco_evaluation._evaluate_predictions_on_coco(coco_gt, copy.deepcopy(dets), "bbox")
        ref = evaluate_predictions_on_coco(
            coco_gt, copy.deepcopy(dets), "bbox", use_fast_impl=False
        )
    assert type(ev) is coco_evaluation.COCOeval_opt
    assert type(ref) is COCOeval
    np.testing.assert_allclose(ev.stats, ref.stats, atol=1e-12)
