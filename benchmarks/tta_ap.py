"""AP and time with and without test-time augmentation (``test.tta`` / ``TEST.AUG``) of a trained
model on its config's test set, the README's TTA table.

    python benchmarks/tta_ap.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_tiny.py \\
        --num-images 32 [--opts test.tta.scales=[0.8,1.0,1.2] ...]

The checkpoint is the config's (``train.init_checkpoint`` / ``MODEL.WEIGHTS``), else
``<output_dir>/model_final.pth``. The views are the config's TTA settings (its ``enabled`` is
ignored: both runs are made). Prints a Markdown table row and writes it as JSON with ``--json``.
"""

import argparse
import functools
import itertools
import json
import os
import sys
import tempfile
import time

import torch

import fpt  # noqa: F401  (adapts detectron2 to this stack)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.logger import setup_logger
from fpt.config import RunConfig, load_config
from fpt.evaluation import evaluate


def _evaluator(run, output_dir, image_ids):
    """The config's evaluator, scoring only ``image_ids`` (COCOEvaluator's ``evaluate`` scores the
    whole test set by default: images that were not run would count as missed)."""
    evaluator = run.build_evaluator(output_dir=output_dir)
    evaluator.evaluate = functools.partial(evaluator.evaluate, img_ids=image_ids)
    return evaluator


class _FirstImages:
    """The first ``n`` batches of a test loader (``len`` included; batches of one image, in the
    test set's order)."""

    def __init__(self, loader, n):
        self.loader, self.n = loader, min(n, len(loader))

    def __len__(self):
        return self.n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)


def _ap(results, task):
    return round(results[task]["AP"], 1) if task in results else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--num-images", type=int, default=32, help="first N test images")
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args(argv)
    setup_logger(name="fpt")

    run = RunConfig(load_config(args.config_file, args.opts))
    weights = run.weights or os.path.join(run.output_dir, "model_final.pth")
    model = run.build_model("cpu").eval()
    DetectionCheckpointer(model).load(weights)
    tta = run.with_tta(model, enabled=True)
    views = repr(tta.views)
    row = dict(
        config=args.config_file, weights=weights, views=views, threads=torch.get_num_threads()
    )
    image_ids = [d["image_id"] for d in run.test_set()[0][: args.num_images]]
    for label, m in (("plain", model), ("tta", tta)):
        loader = _FirstImages(run.build_test_loader(), args.num_images)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            results = evaluate(m, loader, _evaluator(run, tmp, image_ids), label)
            seconds = time.perf_counter() - start
        row.update(
            {
                "images": len(loader),
                f"{label}_box_AP": _ap(results, "bbox"),
                f"{label}_mask_AP": _ap(results, "segm"),
                f"{label}_s_per_image": round(seconds / len(loader), 3),
            }
        )
    row["time_ratio"] = round(row["tta_s_per_image"] / row["plain_s_per_image"], 1)
    print(
        "| {config} | {images} | {plain_box_AP} -> {tta_box_AP} | {plain_mask_AP} -> "
        "{tta_mask_AP} | {plain_s_per_image} -> {tta_s_per_image} (x{time_ratio}) |".format(**row)
    )
    print(f"views: {views}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
