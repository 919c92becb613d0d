"""Draw a model's predictions on dataset images (detectron2 ``Visualizer``) into PNG files."""

import os

import cv2
import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.visualizer import Visualizer

from ..data.images import read_image
from ..inference.visualize import Drawer

__all__ = ["ground_truth_beside_predictions", "save_grid", "side_by_side", "visualize_predictions"]


def side_by_side(left, right, gap=4):
    """Two ``(H, W, 3)`` uint8 drawings side by side, a white ``gap`` between them (the lower one
    padded with white at the bottom)."""
    height = max(left.shape[0], right.shape[0])
    left, right = (
        np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255)
        for p in (left, right)
    )
    return np.concatenate([left, np.full((height, gap, 3), 255, np.uint8), right], 1)


def ground_truth_beside_predictions(rgb, dataset_dict, predictions, metadata, scale=2.0):
    """``rgb`` with ``dataset_dict``'s annotations drawn | with ``predictions`` (a model output
    dict, e.g. ``{"instances": ...}``) drawn, side by side, ``scale`` times the image size."""
    gt = Visualizer(rgb, metadata, scale=scale).draw_dataset_dict(dataset_dict).get_image()
    return side_by_side(gt, Drawer(metadata, scale=scale)(rgb, predictions))


def save_grid(panels, path, cols=2):
    """Write ``panels`` (RGB arrays) as one PNG, ``cols`` per row, padded with white."""
    h = max(p.shape[0] for p in panels)
    w = max(p.shape[1] for p in panels)
    padded = [
        np.pad(p, ((0, h - p.shape[0]), (0, w - p.shape[1]), (0, 0)), constant_values=255)
        for p in panels
    ]
    padded += [np.full_like(padded[0], 255)] * (-len(padded) % cols)
    rows = [np.concatenate(padded[i : i + cols], 1) for i in range(0, len(padded), cols)]
    cv2.imwrite(path, np.concatenate(rows, 0)[:, :, ::-1])
    return path


@torch.no_grad()
def visualize_predictions(
    model, dataset_name, output_dir, num_images=8, score_thresh=0.5, image_format="BGR"
):
    """Save ``num_images`` side-by-side (ground truth | prediction) PNGs and a grid of them.

    Args:
        model: a detectron2 meta-architecture taking ``[{"image": (3, H, W) tensor, ...}]``.
        dataset_name (str): a registered dataset; its first ``num_images`` images are drawn.
        output_dir (str): where ``<image>.png`` and ``grid.png`` are written.
        score_thresh (float): predictions below this score are not drawn.
    Returns:
        list[str]: the written files, grid last.
    """
    metadata = MetadataCatalog.get(dataset_name)
    dicts = DatasetCatalog.get(dataset_name)[:num_images]
    os.makedirs(output_dir, exist_ok=True)
    was_training = model.training
    model.eval()
    files, panels = [], []
    try:
        for d in dicts:
            image = read_image(d["file_name"], format=image_format)
            tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
            device = next(model.parameters()).device
            out = model(
                [{"image": tensor.to(device), "height": image.shape[0], "width": image.shape[1]}]
            )[0]["instances"].to("cpu")
            out = out[out.scores >= score_thresh]
            rgb = image[:, :, ::-1] if image_format == "BGR" else image
            panel = ground_truth_beside_predictions(rgb, d, {"instances": out}, metadata)
            path = os.path.join(
                output_dir, os.path.splitext(os.path.basename(d["file_name"]))[0] + ".png"
            )
            cv2.imwrite(path, panel[:, :, ::-1])
            files.append(path)
            panels.append(panel)
    finally:
        model.train(was_training)
    if panels:
        files.append(save_grid(panels, os.path.join(output_dir, "grid.png")))
    return files
