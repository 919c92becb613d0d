"""Evaluation helpers: metrics plot, results JSON, prediction drawings (fpt.evaluation)."""

import json

import cv2
import numpy as np
import torch

from detectron2.structures import Boxes, Instances

from fpt.evaluation import plot_metrics, save_results, visualize_predictions
from fpt.evaluation.evaluate import _Progress


def test_plot_metrics_draws_losses_and_ap(tmp_path):
    rows = [
        {"iteration": i, "total_loss": 2.0 / (i + 1), "loss_cls": 1.0 / (i + 1), "lr": 0.1}
        for i in range(20)
    ]
    rows.append({"iteration": 19, "bbox/AP": 12.5, "segm/AP": 10.0, "bbox/AP-circle": 3.0})
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    png = cv2.imread(plot_metrics(str(path), str(tmp_path / "metrics.png")))
    assert png.shape == (450, 1200, 3)
    # coloured curves on both panels, not a blank figure
    left, right = png[:, :600], png[:, 600:]
    for panel in (left, right):
        assert (np.ptp(panel.astype(int), axis=2) > 60).sum() > 50


def test_save_results_round_trip(tmp_path):
    results = {"bbox": {"AP": 1.5, "AP-circle": 2.0}}
    path = save_results(results, str(tmp_path / "a" / "results.json"))
    with open(path) as f:
        assert json.load(f) == results


def test_progress_keeps_length_and_items():
    wrapped = _Progress([1, 2, 3], "x")
    assert len(wrapped) == 3 and list(wrapped) == [1, 2, 3]


class _FixedDetector(torch.nn.Module):
    """Predicts one box (10, 10, 50, 50) of class 1 with score 0.9 per image."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, inputs):
        out = []
        for x in inputs:
            inst = Instances((x["height"], x["width"]))
            inst.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 50.0, 50.0]]))
            inst.scores = torch.tensor([0.9])
            inst.pred_classes = torch.tensor([1])
            out.append({"instances": inst})
        return out


def test_visualize_predictions_writes_panels_and_grid(tmp_path):
    model = _FixedDetector().train()
    files = visualize_predictions(model, "shapes_val", str(tmp_path), num_images=3)
    assert [f.rsplit("/", 1)[-1] for f in files] == [
        "shapes_val_00000.png",
        "shapes_val_00001.png",
        "shapes_val_00002.png",
        "grid.png",
    ]
    panel = cv2.imread(files[0])
    assert panel.shape == (256, 2 * 256 + 4, 3)  # ground truth | prediction, scale 2
    assert model.training  # mode restored
    grid = cv2.imread(files[-1])
    assert grid.shape == (2 * 256, 2 * (2 * 256 + 4), 3)
