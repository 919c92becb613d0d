"""Draw a model's predictions on dataset images (detectron2 ``Visualizer``) into PNG files."""

import os

import cv2
import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.visualizer import Visualizer

from ..data.images import read_image
from ..inference.visualize import Drawer

__all__ = ["visualize_predictions"]


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
    draw_predictions = Drawer(metadata, scale=2.0)
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
            gt = Visualizer(rgb, metadata, scale=2.0).draw_dataset_dict(d).get_image()
            pred = draw_predictions(rgb, {"instances": out})
            panel = np.concatenate([gt, np.full((gt.shape[0], 4, 3), 255, np.uint8), pred], 1)
            path = os.path.join(
                output_dir, os.path.splitext(os.path.basename(d["file_name"]))[0] + ".png"
            )
            cv2.imwrite(path, panel[:, :, ::-1])
            files.append(path)
            panels.append(panel)
    finally:
        model.train(was_training)
    if panels:
        h = max(p.shape[0] for p in panels)
        w = max(p.shape[1] for p in panels)
        padded = [
            np.pad(p, ((0, h - p.shape[0]), (0, w - p.shape[1]), (0, 0)), constant_values=255)
            for p in panels
        ]
        cols = 2
        rows = [
            np.concatenate(
                padded[i : i + cols]
                + [np.full_like(padded[0], 255)] * (cols - len(padded[i : i + cols])),
                1,
            )
            for i in range(0, len(padded), cols)
        ]
        grid = os.path.join(output_dir, "grid.png")
        cv2.imwrite(grid, np.concatenate(rows, 0)[:, :, ::-1])
        files.append(grid)
    return files
