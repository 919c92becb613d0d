"""COCO evaluation time: pycocotools' COCOeval vs the fast path (COCOeval_opt through fpt.compat).

Synthetic ground truth and detections in COCO format (boxes and polygon masks), evaluated both
ways through detectron2's own ``_evaluate_predictions_on_coco``, side by side in one run.
Prints time, speed-up and the largest difference between the two sets of stats.

    python benchmarks/coco_eval_speed.py [--images 500] [--dets 100]
"""

import argparse
import contextlib
import io
import json
import os
import tempfile
import time

import numpy as np

import fpt  # noqa: F401  (applies fpt.compat)
from fpt.compat.fast_eval import evaluate_predictions_on_coco
from faster_coco_eval.core import mask as mask_util
from pycocotools.coco import COCO


def make_data(n_images, dets_per_image, seed=0):
    rng = np.random.RandomState(seed)
    images, anns, dets = [], [], []
    H, W = 480, 640
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": W, "height": H, "file_name": f"{i}.jpg"})
        gts = []
        for _ in range(rng.randint(1, 15)):
            x, y = rng.uniform(0, W - 100), rng.uniform(0, H - 100)
            w, h = rng.uniform(5, 100), rng.uniform(5, 100)
            cat = int(rng.randint(1, 81))
            gts.append((x, y, w, h, cat))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat,
                    "iscrowd": 0,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                }
            )
        for k in range(dets_per_image):
            x, y, w, h, cat = gts[k % len(gts)]
            if rng.uniform() < 0.5:  # a jittered true positive, or clutter
                x, y = x + rng.normal(0, w * 0.1), y + rng.normal(0, h * 0.1)
            else:
                x, y, cat = (
                    rng.uniform(0, W - 100),
                    rng.uniform(0, H - 100),
                    int(rng.randint(1, 81)),
                )
            poly = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            rle = mask_util.merge(mask_util.frPyObjects(poly, H, W))
            rle["counts"] = rle["counts"].decode()
            dets.append(
                {
                    "image_id": i,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "score": float(rng.uniform()),
                    "segmentation": rle,
                }
            )
    gt = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": str(c)} for c in range(1, 81)],
    }
    return gt, dets


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--dets", type=int, default=100, help="detections per image")
    args = ap.parse_args()
    gt, dets = make_data(args.images, args.dets)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gt.json")
        with open(path, "w") as f:
            json.dump(gt, f)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(path)
    print(f"{args.images} images, {len(gt['annotations'])} objects, {len(dets)} detections")
    print(f"{'iou':<6}{'pycocotools s':>15}{'fast s':>10}{'speed-up':>10}{'max |dAP|':>12}")
    for iou_type in ("bbox", "segm"):
        d = (
            dets
            if iou_type == "segm"
            else [{k: v for k, v in x.items() if k != "segmentation"} for x in dets]
        )
        runs = {}
        for fast in (False, True):
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                runs[fast] = evaluate_predictions_on_coco(coco_gt, d, iou_type, use_fast_impl=fast)
            runs[fast] = (time.perf_counter() - t, runs[fast].stats)
        (t_ref, s_ref), (t_fast, s_fast) = runs[False], runs[True]
        print(
            f"{iou_type:<6}{t_ref:>15.2f}{t_fast:>10.2f}{t_ref / t_fast:>9.1f}x"
            f"{np.abs(np.array(s_ref) - np.array(s_fast)).max():>12.1e}"
        )


if __name__ == "__main__":
    main()
