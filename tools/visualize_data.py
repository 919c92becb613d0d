#!/usr/bin/env python
"""Draw a config's training data: the dataset's annotations, or the batches exactly as the model
receives them (after the training augmentations: LSJ, DETR's crops, flips), with class names.

    python tools/visualize_data.py --config-file configs/Shapes/detr_tiny.py \\
        --source dataloader --output vis/ --num-images 8

Each PNG is the image as read (``annotation``) or as the model receives it (``dataloader``: the
mapper's output tensor, resized, cropped, padded, flipped, in RGB), then the same with its
boxes, masks and class names drawn, side by side, at the image's own size. ``dataloader``
draws the boxes of the ``instances`` the model gets (absolute XYXY; DETR normalises them to
cxcywh itself, inside the model), masks where the mapper keeps them. Overrides go last
(``key=value``, yacs ``KEY VALUE``). Exit code 2 with one line on stderr for a bad config,
dataset or value.
"""

import os

# idle OpenMP threads sleep instead of spinning (as train_net.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import fpt  # noqa: E402,F401  (first of ours: adapts detectron2 to this stack)

import argparse  # noqa: E402
import sys  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.utils.visualizer import Visualizer  # noqa: E402

from fpt.config import ConfigError, RunConfig, load_config  # noqa: E402
from fpt.data import DatasetError, ImageReadError, check_registered, read_image  # noqa: E402
from fpt.engine import Trainer  # noqa: E402
from fpt.engine.main import register_datasets  # noqa: E402
from fpt.evaluation.visualize import side_by_side  # noqa: E402

SOURCES = ("annotation", "dataloader")


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: " + __doc__.split("\n\n")[1].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help=".py or .yaml")
    parser.add_argument("--source", required=True, choices=SOURCES)
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the PNGs")
    parser.add_argument("--num-images", type=int, default=16, metavar="N")
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides: key=value (LazyConfig) or KEY VALUE pairs (yacs)",
    )
    return parser


def _stem(dataset_dict):
    return os.path.splitext(os.path.basename(dataset_dict.get("file_name", "image")))[0]


def annotation_panels(run, num_images):
    """``(name, panel)`` for the first ``num_images`` images of the training set(s): the image |
    its annotations drawn (``Visualizer.draw_dataset_dict``)."""
    names = run.train_dataset_names
    metadata = MetadataCatalog.get(names[0])
    count = 0
    for name in names:
        for d in DatasetCatalog.get(name):
            if count == num_images:
                return
            rgb = read_image(d["file_name"], format="RGB")
            drawn = Visualizer(rgb, metadata).draw_dataset_dict(d).get_image()
            yield f"{count:03d}_{_stem(d)}", side_by_side(rgb, drawn)
            count += 1


def model_input_rgb(model_input, input_format):
    """The ``(H, W, 3)`` uint8 RGB image of a mapped dataset dict's ``image`` tensor (3, H, W)."""
    image = model_input["image"].permute(1, 2, 0).numpy()
    if input_format == "BGR":
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image.astype(np.uint8))


def draw_model_input(model_input, metadata, input_format):
    """The model input's image | with its ``instances`` (boxes, masks, class names) drawn."""
    rgb = model_input_rgb(model_input, input_format)
    visualizer = Visualizer(rgb, metadata)
    instances = model_input.get("instances")
    if instances is not None and len(instances):
        names = metadata.get("thing_classes") or []
        labels = [names[c] if c < len(names) else str(c) for c in instances.gt_classes.tolist()]
        visualizer.overlay_instances(
            boxes=instances.gt_boxes.tensor.numpy(),
            labels=labels,
            masks=instances.gt_masks if instances.has("gt_masks") else None,
        )
    return side_by_side(rgb, visualizer.output.get_image())


def dataloader_panels(run, num_images):
    """``(name, panel, model_input)`` for the first ``num_images`` mapped training images, from
    the training loader as the trainer builds it (its sampler, seeded as ``train.seed`` says)."""
    metadata = MetadataCatalog.get(run.train_dataset_names[0])
    input_format = run.input_format()
    loader, _ = Trainer._build_train_loader(SimpleNamespace(run=run, settings=run.train_settings()))
    count = 0
    for batch in loader:
        for model_input in batch:
            if count == num_images:
                return
            panel = draw_model_input(model_input, metadata, input_format)
            yield f"{count:03d}_{_stem(model_input)}", panel, model_input
            count += 1


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.num_images < 1:
        parser.error("--num-images must be >= 1")
    try:
        run = RunConfig(load_config(args.config_file, args.opts))
        register_datasets(run, None)
        check_registered(run.train_dataset_names)
        if not run.train_dataset_names:
            raise DatasetError(f"{args.config_file}: the config names no training dataset")
        panels = (
            annotation_panels(run, args.num_images)
            if args.source == "annotation"
            else (p[:2] for p in dataloader_panels(run, args.num_images))
        )
        os.makedirs(args.output, exist_ok=True)
        files = []
        for name, panel in panels:
            path = os.path.join(args.output, name + ".png")
            cv2.imwrite(path, panel[:, :, ::-1])
            files.append(path)
    except (ConfigError, DatasetError, ImageReadError, OSError) as e:
        print(f"visualize_data.py: error: {e}", file=sys.stderr)
        return 2
    what = "image" if args.source == "annotation" else "model input"
    where = os.path.abspath(args.output)
    print(f"wrote {len(files)} PNGs ({what} | with its annotations drawn) to {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
