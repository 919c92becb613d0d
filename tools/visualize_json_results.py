#!/usr/bin/env python
"""Draw a model's predictions from a COCO results file beside each image's ground truth.

    python tools/visualize_json_results.py --dataset shapes_val --output vis/ \\
        --input output/shapes_mask_rcnn_R_18_FPN_tiny/inference/coco_instances_results.json

``--input`` is a COCO results list (``[{"image_id", "category_id", "bbox": [x, y, w, h],
"score", "segmentation"?}]``), as ``COCOEvaluator`` writes (``coco_instances_results.json`` in
the evaluation's output folder) and ``demo/demo.py --json-output`` writes. ``--dataset`` is a
registered dataset (``shapes_val``, ``coco_2017_val``, ... or one registered with
``--register-coco NAME JSON IMAGES``). One PNG per image, ground truth | predictions scoring at
least ``--conf-threshold``, twice the image size. Exit code 2 with one line on stderr for a bad
file, dataset or category.
"""

import os

import fpt  # noqa: E402,F401  (first of ours: adapts detectron2 to this stack)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pycocotools import mask as mask_util  # noqa: E402

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.structures import Boxes, BoxMode, Instances  # noqa: E402

from fpt.data import DatasetError, ImageReadError, check_registered, read_image  # noqa: E402
from fpt.data import register_coco  # noqa: E402
from fpt.evaluation.visualize import ground_truth_beside_predictions  # noqa: E402


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: " + __doc__.split("\n\n")[1].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, metavar="JSON", help="COCO results list")
    parser.add_argument("--dataset", required=True, metavar="NAME", help="a registered dataset")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the PNGs")
    parser.add_argument("--conf-threshold", type=float, default=0.5, metavar="T")
    parser.add_argument(
        "--num-images", type=int, metavar="N", help="the dataset's first N images (default: all)"
    )
    parser.add_argument(
        "--register-coco",
        nargs=3,
        metavar=("NAME", "JSON", "IMAGES"),
        help="register a COCO-format dataset first",
    )
    return parser


def read_results(path):
    """The results file's detections, grouped by ``image_id``."""
    try:
        with open(path) as f:
            results = json.load(f)
    except ValueError as e:  # json.JSONDecodeError
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(results, list) or not all(
        isinstance(r, dict) and {"image_id", "category_id", "bbox", "score"} <= r.keys()
        for r in results
    ):
        raise DatasetError(
            f"{path}: expected a COCO results list of dicts with image_id, category_id, bbox "
            "and score"
        )
    by_image = defaultdict(list)
    for r in results:
        by_image[r["image_id"]].append(r)
    return by_image


def results_to_instances(results, image_size, metadata, conf_threshold, path="results"):
    """Detections of one image (COCO results dicts) scoring ``>= conf_threshold`` as
    ``Instances`` (``pred_boxes`` XYXY, ``scores``, ``pred_classes`` contiguous, ``pred_masks``
    when every kept detection has a segmentation)."""
    kept = [r for r in results if r["score"] >= conf_threshold]
    to_contiguous = metadata.get("thing_dataset_id_to_contiguous_id")
    classes = []
    for r in kept:
        if to_contiguous is None:
            classes.append(int(r["category_id"]))
        elif r["category_id"] in to_contiguous:
            classes.append(to_contiguous[r["category_id"]])
        else:
            raise DatasetError(
                f"{path}: category_id {r['category_id']} is not a category of "
                f"{metadata.name} (ids: {sorted(to_contiguous)})"
            )
    instances = Instances(image_size)
    boxes = np.array([r["bbox"] for r in kept], dtype=np.float32).reshape(-1, 4)
    instances.pred_boxes = Boxes(BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS))
    instances.scores = torch.tensor([float(r["score"]) for r in kept])
    instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
    if kept and all("segmentation" in r for r in kept):
        masks = mask_util.decode([r["segmentation"] for r in kept])  # (H, W, N)
        instances.pred_masks = torch.as_tensor(masks.transpose(2, 0, 1).astype(bool))
    return instances


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    try:
        if args.register_coco:
            register_coco(*args.register_coco)
        check_registered([args.dataset])
        by_image = read_results(args.input)
        metadata = MetadataCatalog.get(args.dataset)
        dicts = DatasetCatalog.get(args.dataset)[: args.num_images]
        known = {d["image_id"] for d in dicts}
        if by_image and args.num_images is None and not known & by_image.keys():
            raise DatasetError(
                f"{args.input}: no image_id of it is in {args.dataset} (another dataset's "
                "results?)"
            )
        os.makedirs(args.output, exist_ok=True)
        drawn = 0
        for d in dicts:
            rgb = read_image(d["file_name"], format="RGB")
            instances = results_to_instances(
                by_image.get(d["image_id"], []),
                rgb.shape[:2],
                metadata,
                args.conf_threshold,
                args.input,
            )
            panel = ground_truth_beside_predictions(rgb, d, {"instances": instances}, metadata)
            name = os.path.splitext(os.path.basename(d["file_name"]))[0]
            cv2.imwrite(os.path.join(args.output, name + ".png"), panel[:, :, ::-1])
            drawn += 1
    except (DatasetError, ImageReadError, OSError) as e:
        print(f"visualize_json_results.py: error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {drawn} PNGs (ground truth | predictions with score >= {args.conf_threshold}) "
        f"to {os.path.abspath(args.output)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
