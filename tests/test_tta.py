"""Test-time augmentation (``fpt.modeling.tta``; ``test.tta`` / ``TEST.AUG``): the identity view
gives the model's own outputs (R-CNN families and DETR), flips are merged as documented, DETR's
box fusion against a hand-computed reference, the config keys of both kinds, and
``train_net.py --eval-only test.tta.enabled=True``."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import detectron2.data.transforms as T
from detectron2.layers import batched_nms
from detectron2.model_zoo import get_config_file
from fpt.config import ConfigError, RunConfig, load_config
from fpt.modeling.tta import DETRWithTTA, RCNNWithTTA, TTAViews, fuse_boxes, with_tta
from support import shapes_val_subset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FPN = os.path.join(REPO, "tests", "data", "tiny_mask_rcnn_R_18_FPN.py")  # resize 128 / 200


def _shapes(name):
    return os.path.join(REPO, "configs", "Shapes", name)


# (config, overrides, image size (h, w)); random weights, every detection kept
FAMILIES = {
    "fpn": (TINY_FPN, ["model.roi_heads.box_predictor.test_score_thresh=0.0"], (150, 220)),
    "vitdet": (
        _shapes("vitdet_mask_rcnn_tiny.py"),
        ["model.roi_heads.box_predictor.test_score_thresh=0.0"],
        (128, 112),
    ),
    "fpt": (
        _shapes("fpt_mask_rcnn_tiny.py"),
        ["model.roi_heads.box_predictor.test_score_thresh=0.0"],
        (112, 136),
    ),
    "detr": (_shapes("detr_tiny.py"), [], (112, 136)),
}


def _model(family):
    path, opts, _ = FAMILIES[family]
    run = RunConfig(load_config(path, ["train.device=cpu", *opts]))
    torch.manual_seed(0)
    return run, run.build_model("cpu").eval()


def _image(h, w, seed=0):
    """A smooth random RGB image (uint8, H x W x 3): blobs the random models respond to."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(T.ResizeTransform(*small.shape[:2], h, w).apply_image(small))


def _input(run, image):
    """The model input the test loader would give: the config's test resize applied."""
    aug = T.AugInput(image)
    run.test_augmentations()(aug)
    tensor = torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1))).float()
    return {"image": tensor, "height": image.shape[0], "width": image.shape[1]}


def _by_score(instances):
    order = instances.scores.argsort(descending=True, stable=True)
    return instances[order]


def _assert_same(got, ref):
    got, ref = _by_score(got), _by_score(ref)
    assert len(got) == len(ref) > 0
    assert got.image_size == ref.image_size
    torch.testing.assert_close(got.scores, ref.scores, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.pred_boxes.tensor, ref.pred_boxes.tensor, rtol=1e-5, atol=1e-3)
    assert torch.equal(got.pred_classes, ref.pred_classes)
    if ref.has("pred_masks"):
        assert got.pred_masks.shape == ref.pred_masks.shape
        agree = (got.pred_masks == ref.pred_masks).float().mean()
        assert agree > 0.999, agree  # boxes equal to float precision: pasted masks too


@pytest.mark.parametrize("family", list(FAMILIES))
@torch.no_grad()
def test_identity_view_gives_the_models_own_outputs(family):
    run, model = _model(family)
    inputs = _input(run, _image(*FAMILIES[family][2]))
    plain = model([inputs])[0]["instances"]
    tta = with_tta(model, scales=[1.0], flip=False)
    assert isinstance(tta, DETRWithTTA if family == "detr" else RCNNWithTTA)
    _assert_same(tta([inputs])[0]["instances"], plain)
    if family == "fpn":  # absolute sizes, as TEST.AUG: the config's test resize, 128 / 200
        absolute = with_tta(model, min_sizes=[128], max_size=200, flip=False)
        assert tuple(inputs["image"].shape[1:]) != (150, 220)  # the loader resized the image
        _assert_same(absolute([inputs])[0]["instances"], plain)


def _mirror(boxes, width):
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)


@torch.no_grad()
def test_flip_merge_on_a_mirror_symmetric_image():
    """The flipped view of a symmetric image sees the same pixels: its detections are the plain
    ones mirrored, and TTA returns the per-class NMS of both sets; the mask of a box and of its
    mirror image (both kept) are mirror images too."""
    run, model = _model("fpn")
    half = _image(128, 96)
    image = np.ascontiguousarray(np.concatenate([half, half[:, ::-1]], axis=1))  # 128 x 192
    inputs = _input(run, image)
    assert tuple(inputs["image"].shape[1:]) == (128, 192)  # no resize at the test size
    plain = model([inputs])[0]["instances"]
    got = _by_score(with_tta(model, scales=[1.0], flip=True)([inputs])[0]["instances"])

    boxes = torch.cat([plain.pred_boxes.tensor, _mirror(plain.pred_boxes.tensor, 192)])
    scores = torch.cat([plain.scores, plain.scores])
    classes = torch.cat([plain.pred_classes, plain.pred_classes])
    predictor = model.roi_heads.box_predictor
    keep = batched_nms(boxes, scores, classes, predictor.test_nms_thresh)
    keep = keep[: predictor.test_topk_per_image]
    assert len(got) == len(keep)
    torch.testing.assert_close(got.scores, scores[keep])
    # equal scores (a box and its mirror) may come in either order: compare as sets
    expected = sorted(boxes[keep].tolist())
    torch.testing.assert_close(
        torch.tensor(sorted(got.pred_boxes.tensor.tolist())),
        torch.tensor(expected),
        atol=1e-3,
        rtol=0,
    )
    # more than the plain set: mirrored boxes that overlap no plain box of their class were added
    assert len(got) > len(plain) or len(plain) == predictor.test_topk_per_image

    masks, tensor = got.pred_masks, got.pred_boxes.tensor
    pairs = 0
    for i in range(len(got)):
        for j in range(len(got)):
            mirrored = _mirror(tensor[i : i + 1], 192)[0]
            if i != j and got.pred_classes[i] == got.pred_classes[j]:
                if torch.allclose(tensor[j], mirrored, atol=1e-3):
                    agree = (masks[j] == masks[i].flip(-1)).float().mean()
                    assert agree > 0.99, (i, j, agree)
                    pairs += 1
    assert pairs > 0


def test_detr_fusion_against_a_hand_computed_reference():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # A, view 0, class 0
            [20.0, 20.0, 30.0, 30.0],  # B, view 0, class 0
            [1.0, 1.0, 11.0, 11.0],  # A', view 1: IoU(A, A') = 81 / 119 > 0.55
            [0.0, 0.0, 10.0, 10.0],  # C, view 0 again: A's cluster has a view-0 box already
            [0.0, 0.0, 10.0, 10.0],  # D, view 1, class 1: another class, its own box
            [22.0, 20.0, 32.0, 30.0],  # B', view 1: IoU(B, B') = 80 / 120 > 0.55
        ]
    )
    scores = torch.tensor([0.9, 0.6, 0.6, 0.5, 0.8, 0.2])
    classes = torch.tensor([0, 0, 0, 0, 1, 0])
    views = torch.tensor([0, 0, 1, 0, 1, 1])
    got_boxes, got_scores, got_classes = fuse_boxes(boxes, scores, classes, views, 2)
    # class 0 by start order: A + A', B + B', C; then class 1: D
    expected_boxes = torch.tensor(
        [
            [0.4, 0.4, 10.4, 10.4],  # (0.9 A + 0.6 A') / 1.5
            [20.5, 20.0, 30.5, 30.0],  # (0.6 B + 0.2 B') / 0.8
            [0.0, 0.0, 10.0, 10.0],  # C alone
            [0.0, 0.0, 10.0, 10.0],  # D alone
        ]
    )
    torch.testing.assert_close(got_boxes, expected_boxes)
    # score: sum over the 2 views
    torch.testing.assert_close(got_scores, torch.tensor([0.75, 0.4, 0.25, 0.4]))
    assert got_classes.tolist() == [0, 0, 0, 1]
    # above IoU(A, A') and IoU(B, B'): nothing is fused, every box is its own
    assert len(fuse_boxes(boxes, scores, classes, views, 2, iou_threshold=0.7)[0]) == 6


def test_view_sizes_respect_a_fixed_square_input():
    views = TTAViews(min_sizes=[48, 64, 128], max_size=400, flip=True, max_side=128)
    # 100 x 200 original: shortest edge 48 -> 48 x 96; 64 -> 64 x 128; 128 -> 128 x 256, capped
    # to a longer side of 128: 64 x 128 again, run once
    assert views.sizes((100, 200), (100, 200)) == [(48, 96), (64, 128)]
    relative = TTAViews(scales=[0.5, 1.0, 2.0], flip=False, max_side=128)
    assert relative.sizes((640, 480), (128, 96)) == [(64, 48), (128, 96)]
    pixels = relative({"image": torch.zeros(3, 128, 96), "height": 640, "width": 480})
    assert [tuple(p.shape[1:]) for p, _ in pixels] == [(64, 48), (128, 96)]


@torch.no_grad()
def test_vitdet_views_are_capped_to_its_square_pad():
    run, model = _model("vitdet")
    tta = run.with_tta(model, enabled=True)  # default scales 0.8, 1.0, 1.2 and flip
    assert tta.views.max_side == 128
    inputs = _input(run, _image(128, 112))
    assert [v.size for _, v in tta.views(inputs)] == [(102, 90)] * 2 + [(128, 112)] * 2
    out = tta([inputs])[0]["instances"]
    assert out.image_size == (128, 112) and len(out) > 0


def test_config_keys_of_both_kinds(tmp_path):
    lazy = RunConfig(load_config(_shapes("detr_tiny.py")))
    assert lazy.tta_settings == dict(
        enabled=False, min_sizes=None, max_size=None, scales=[0.8, 1.0, 1.2], flip=True
    )
    lazy = RunConfig(
        load_config(
            _shapes("detr_tiny.py"), ["test.tta.min_sizes=[100,128]", "test.tta.flip=False"]
        )
    )
    assert lazy.tta_settings["min_sizes"] == [100, 128] and lazy.tta_settings["flip"] is False
    with pytest.raises(ConfigError, match="unknown config key 'test.tta.flips'"):
        load_config(_shapes("detr_tiny.py"), ["test.tta.flips=False"])
    bad = RunConfig(load_config(_shapes("detr_tiny.py"), ["test.tta.scales=[0]"]))
    with pytest.raises(
        ConfigError, match=r"^test.tta: scales must be positive numbers, got \[0\]$"
    ):
        bad.with_tta(nn.Identity(), enabled=True)
    with pytest.raises(ConfigError, match="^test.tta: test-time augmentation supports R-CNN"):
        lazy.with_tta(nn.Linear(1, 1), enabled=True)
    model = nn.Linear(1, 1)
    assert lazy.with_tta(model) is model  # disabled in the config: the model itself

    yaml = tmp_path / "tiny.yaml"
    base = json.dumps(get_config_file("Base-RCNN-FPN.yaml"))
    yaml.write_text(
        f"_BASE_: {base}\nMODEL: {{DEVICE: cpu, RESNETS: {{DEPTH: 18, RES2_OUT_CHANNELS: 64}}}}\n"
    )
    yacs = RunConfig(
        load_config(str(yaml), ["TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(96, 128)"])
    )
    assert yacs.tta_key == "TEST.AUG"
    assert yacs.tta_settings == dict(
        enabled=True, min_sizes=[96, 128], max_size=4000, scales=None, flip=True
    )
    tta = yacs.with_tta(yacs.build_model("cpu").eval())
    assert isinstance(tta, RCNNWithTTA) and tta.views.min_sizes == [96, 128]


@pytest.fixture(scope="module")
def tiny_val(tmp_path_factory):
    return shapes_val_subset(str(tmp_path_factory.mktemp("tta_val")), 3)


def test_eval_only_with_tta_from_the_command_line(tiny_val, tmp_path):
    """``--eval-only test.tta.enabled=True`` evaluates through the augmenting wrapper."""
    args = [
        sys.executable,
        "train_net.py",
        "--config-file",
        _shapes("mask_rcnn_R_18_FPN_tiny.py"),
        "--eval-only",
        "--register-coco",
        "tta_val",
        *tiny_val,
        "dataloader.test.dataset.names=tta_val",
        "dataloader.test.num_workers=0",
        "model.roi_heads.box_predictor.test_score_thresh=0.0",
        "train.visualize.num_images=0",
        f"train.output_dir={tmp_path}",
        "test.tta.enabled=True",
        "test.tta.scales=[1.0,1.25]",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="error")
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "Test-time augmentation: TTAViews(scales=[1.0, 1.25], flip=True)" in log
    results = json.loads((tmp_path / "inference" / "results.json").read_text())
    assert set(results) == {"bbox", "segm"} and 0 <= results["bbox"]["AP"] <= 100
