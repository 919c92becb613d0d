"""The tiny DETR config end to end, as a user runs it: ``train_net.py`` trains it on the shapes
set (with and without iRPE in the encoder) and evaluates it with COCOEvaluator, then
``demo/demo.py`` writes every query's detection as COCO json."""

import json
import math
import os
import subprocess
import sys

import pytest

from support import shapes_val_subset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/Shapes/detr_tiny.py"


@pytest.fixture(scope="module")
def tiny_val(tmp_path_factory):
    """The first 8 shapes_val images as a COCO json (registered with --register-coco)."""
    return shapes_val_subset(str(tmp_path_factory.mktemp("tiny_val")), 8)


def _run(args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONWARNINGS="error")
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module", params=[None, "rpe-2.0-product-ctx-1-k"], ids=["detr", "irpe"])
def trained(request, tiny_val, tmp_path_factory):
    out = tmp_path_factory.mktemp("detr_tiny")
    _run(
        [
            "train_net.py",
            "--config-file",
            CONFIG,
            "--register-coco",
            "tiny_val",
            *tiny_val,
            "dataloader.test.dataset.names=tiny_val",
            f"model.transformer.enc_rpe={request.param or 'null'}",
            "train.max_iter=60",
            "train.eval_period=60",
            "train.checkpointer.period=60",
            "train.log_period=1",
            "dataloader.train.total_batch_size=4",
            "dataloader.train.num_workers=0",
            "dataloader.test.num_workers=0",
            f"train.output_dir={out}",
        ]
    )
    return out, request.param


@pytest.mark.slow
def test_tiny_detr_trains_and_evaluates(trained):
    out, spec = trained
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    # metrics.json holds medians over the last 20 iterations
    totals = [r["total_loss"] for r in rows if "total_loss" in r]
    assert len(totals) == 60
    assert totals[-1] < 0.8 * totals[0], totals
    losses = {k for r in rows for k in r if k.startswith("loss_")}
    assert losses == {f"loss_{n}{s}" for n in ("ce", "bbox", "giou") for s in ("", "_0")}
    assert any("class_error" in r for r in rows) and any("cardinality_error" in r for r in rows)

    results = json.loads((out / "inference" / "results_iter0000060.json").read_text())
    bbox = results["bbox"]
    assert {"AP", "AP50", "AP75", "AP-circle", "AP-square", "AP-triangle"} <= set(bbox)
    assert all(math.isfinite(bbox[k]) for k in ("AP", "AP50", "AP75"))
    config = (out / "config.yaml").read_text()
    assert f"enc_rpe: {spec or 'null'}" in config


@pytest.mark.slow
def test_demo_writes_every_query_as_coco_json(trained, tiny_val, tmp_path):
    out, spec = trained
    images = sorted(os.listdir(tiny_val[1]))[:2]
    json_path = tmp_path / "out.json"
    _run(
        [
            "demo/demo.py",
            "--config-file",
            CONFIG,
            "--input",
            *(os.path.join(tiny_val[1], name) for name in images),
            "--batch-size",
            "2",
            "--confidence-threshold",
            "0",
            "--json-output",
            str(json_path),
            "--device",
            "cpu",
            "--opts",
            f"train.init_checkpoint={out / 'model_final.pth'}",
            f"model.transformer.enc_rpe={spec or 'null'}",
        ]
    )
    results = json.loads(json_path.read_text())
    per_image = {}
    for r in results:
        per_image.setdefault(r["image_id"], []).append(r)
    assert sorted(len(v) for v in per_image.values()) == [10, 10]  # every query, no threshold
    assert {r["category_id"] for r in results} <= {1, 2, 3}
    for r in results:
        x, y, w, h = r["bbox"]
        assert 0 <= x and 0 <= y and w >= 0 and h >= 0 and x + w <= 128.01 and y + h <= 128.01
        assert 0 <= r["score"] <= 1
