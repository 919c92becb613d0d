"""fpt.export / tools/export_model.py: every supported (model family x format x method) exports,
reloads from disk and gives the eager model's predictions on the sample image and on an image of
another size; unsupported combinations and exports that would be wrong end in one line.

Tiny randomly initialised models (seeded, saved as checkpoints) on small real photos (at most
80 px); each family is exported once per (format, method) for the module.
"""

import copy
import json
import os

import numpy as np
import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.model_zoo import get_config_file

import fpt.layers.irpe as irpe
from fpt.config import RunConfig, load_config
from fpt.export import (
    ExportError,
    UnsupportedExport,
    compare_predictions,
    export_model,
    load_exported,
    read_info,
)
from fpt.export.runner import augmentations_to_json
from fpt.predictor import Predictor
from support import COCO_CATEGORY_IDS, load_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


S = load_module("demo_support", os.path.join(REPO, "tests", "data", "demo_support.py"))
TOOL = load_module("fpt_export_tool", os.path.join(REPO, "tools", "export_model.py"))
DEMO = load_module("fpt_demo_main", os.path.join(REPO, "demo", "demo.py"))
IRPE = "model.transformer.enc_rpe=rpe-2.0-product-ctx-1-k"

# family -> (config file, overrides); each made small (<= 80 px inputs)
CASES = {
    # Mask R-CNN R-18-FPN with a test resize (short side 64, at most 96)
    "rcnn": (
        os.path.join(REPO, "tests", "data", "tiny_mask_rcnn_R_18_FPN.py"),
        [
            "model.pixel_std=[57.375,57.12,58.395]",
            "model.roi_heads.box_predictor.test_score_thresh=0.0",  # 80 classes, random weights
            "dataloader.test.mapper.augmentations.0.short_edge_length=64",
            "dataloader.test.mapper.augmentations.0.max_size=96",
        ],
    ),
    # a yacs config: detectron2's Cascade Mask R-CNN made tiny
    "cascade_rcnn": (
        get_config_file("Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml"),
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.RESNETS.DEPTH",
            "18",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "64",
            "MODEL.RESNETS.NORM",
            "BN",
            "MODEL.FPN.OUT_CHANNELS",
            "32",
            "MODEL.PIXEL_STD",
            "[57.375,57.12,58.395]",
            "MODEL.RPN.POST_NMS_TOPK_TEST",
            "50",
            "MODEL.ROI_HEADS.NUM_CLASSES",
            "3",
            "MODEL.ROI_BOX_HEAD.FC_DIM",
            "64",
            "MODEL.ROI_MASK_HEAD.CONV_DIM",
            "16",
            "MODEL.ROI_MASK_HEAD.NUM_CONV",
            "1",
            "TEST.DETECTIONS_PER_IMAGE",
            "20",
            "INPUT.MIN_SIZE_TEST",
            "64",
            "INPUT.MAX_SIZE_TEST",
            "96",
        ],
    ),
    # square padding 96: every input is padded to 96 x 96 (6 x 6 tokens)
    "vitdet": (
        os.path.join(REPO, "configs", "Shapes", "vitdet_mask_rcnn_tiny.py"),
        [
            "model.backbone.square_pad=96",
            "model.backbone.net.img_size=96",
            "model.backbone.net.pretrain_img_size=96",
        ],
    ),
    "fpt": (os.path.join(REPO, "configs", "Shapes", "fpt_mask_rcnn_tiny.py"), []),
    "semantic_fpt": (os.path.join(REPO, "configs", "Cityscapes", "semantic_R_50_FPT.py"), []),
    "detr": (os.path.join(REPO, "configs", "Shapes", "detr_tiny.py"), []),
    "detr_irpe": (os.path.join(REPO, "configs", "Shapes", "detr_tiny.py"), [IRPE]),
}
SUPPORTED = [
    ("rcnn", "torchscript", "tracing"),
    ("rcnn", "torchscript", "scripting"),
    ("rcnn", "onnx", "tracing"),
    ("cascade_rcnn", "torchscript", "tracing"),
    ("cascade_rcnn", "onnx", "tracing"),
    ("vitdet", "torchscript", "tracing"),
    ("vitdet", "onnx", "tracing"),
    ("fpt", "torchscript", "tracing"),
    ("fpt", "onnx", "tracing"),
    ("semantic_fpt", "torchscript", "tracing"),
    ("semantic_fpt", "onnx", "tracing"),
    ("detr", "torchscript", "tracing"),
    ("detr", "onnx", "tracing"),
    ("detr_irpe", "torchscript", "tracing"),
    ("detr_irpe", "onnx", "tracing"),
]


RESNET_TINY = load_module(
    "resnet_tiny", os.path.join(REPO, "configs", "common", "models", "resnet_tiny.py")
)


def _shrink_fpt(cfg):
    """FPT's ResNet-18 at a quarter width (16-128 channels)."""
    RESNET_TINY.make_resnet18_tiny(cfg.model.backbone.pyramid.bottom_up, width=16)


def _shrink_semantic(cfg):
    """The Cityscapes R-50-FPT semantic model at R-18 (quarter width), 32 channels, 64 px,
    4 classes."""
    _shrink_fpt(cfg)
    cfg.model.backbone.out_channels = 32
    cfg.model.sem_seg_head.conv_dims = 32  # GroupNorm(32, .)
    cfg.model.sem_seg_head.norm = "GN"
    cfg.model.sem_seg_head.num_classes = 4
    cfg.model.pixel_std = [57.375, 57.12, 58.395]
    cfg.dataloader.test.mapper.augmentations[0].short_edge_length = 64
    cfg.dataloader.test.mapper.augmentations[0].max_size = 96


class Case:
    """A family's config with a random (seeded) checkpoint, and its eager predictor."""

    def __init__(self, family, folder):
        path, opts = CASES[family]
        self.family = family
        self.cfg = load_config(path, opts)
        if family == "semantic_fpt":
            _shrink_semantic(self.cfg)
        elif family == "fpt":
            _shrink_fpt(self.cfg)
        run = RunConfig(self.cfg)
        torch.manual_seed(0)
        model = run.build_model("cpu")
        DetectionCheckpointer(model, save_dir=str(folder)).save(family)
        run.set_weights(os.path.join(str(folder), family + ".pth"))
        self.eager = Predictor(self.cfg, device="cpu", image_format="RGB")


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    built = {}

    def get(family):
        if family not in built:
            built[family] = Case(family, folder)
        return built[family]

    return get


@pytest.fixture(scope="module")
def exports(cases, photos, tmp_path_factory):
    """export_model of a family (once per module): (result, export folder)."""
    done = {}

    def get(family, fmt="torchscript", method="tracing"):
        key = (family, fmt, method)
        if key not in done:
            out = tmp_path_factory.mktemp("_".join(key)) / "exported"
            case = cases(family)
            result = export_model(
                case.cfg, str(out), fmt, method, sample_image=photos[0], predictor=case.eager
            )
            done[key] = (result, out)
        return done[key]

    return get


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """(sample file, sample RGB, another RGB image): a real photo 53x80, and one of another size
    and aspect ratio than the sample and the exporter's own second check image."""
    sample = S.skimage_photo("coffee.png", max_side=80)
    path = tmp_path_factory.mktemp("photos") / "coffee.png"
    sample.save(path)
    other = np.asarray(S.skimage_photo("astronaut.png", max_side=72).convert("RGB"))[:, 8:64]
    return str(path), np.asarray(sample.convert("RGB")), np.ascontiguousarray(other)


def _assert_matches_eager(case, exported, images):
    for image in images:
        expected, got = case.eager(image), exported(image)
        problems, _ = compare_predictions(expected, got)
        assert not problems, (image.shape, problems)
        if "instances" in expected:  # something was compared
            assert len(expected["instances"]) > 0


@pytest.mark.parametrize("family,fmt,method", SUPPORTED)
def test_export_reloads_and_matches_eager_at_two_sizes(family, fmt, method, cases, exports, photos):
    case = cases(family)
    _, sample, other = photos
    result, out = exports(family, fmt, method)
    model_file = {"torchscript": "model.ts", "onnx": "model.onnx"}[fmt]
    assert sorted(os.listdir(out)) == sorted([model_file, "export.json"])  # no leftovers
    assert result["family"].key == family
    _, info = read_info(str(out / model_file))
    assert (info["format"], info["export_method"], info["family"]) == (fmt, method, family)
    assert info["input"]["format"] == case.eager.input_format
    assert info["metadata"]["name"] == case.eager.metadata.name
    # the exporter checked the sample and a second size itself
    assert len({tuple(s) for s in info["verification"]["image_sizes"]}) == 2

    exported = load_exported(str(out), device="cpu", image_format="RGB")
    assert augmentations_to_json(exported.augmentations) == augmentations_to_json(
        case.eager.augmentations
    )
    assert exported.input_format == case.eager.input_format
    assert sample.shape[:2] != other.shape[:2]
    _assert_matches_eager(case, exported, [sample, other])


def test_support_matrix_names_what_works(cases, photos, tmp_path):
    sample_path = photos[0]
    with pytest.raises(UnsupportedExport, match=r"--format onnx --export-method tracing"):
        export_model(cases("rcnn").cfg, str(tmp_path), "onnx", "scripting")
    for family in ("cascade_rcnn", "fpt", "detr_irpe"):
        with pytest.raises(UnsupportedExport) as e:
            case = cases(family)
            export_model(
                case.cfg,
                str(tmp_path / family),
                "torchscript",
                "scripting",
                sample_image=sample_path,
                predictor=case.eager,
            )
        message = str(e.value)
        assert "\n" not in message and "use --export-method tracing" in message
    assert not os.listdir(tmp_path)


def test_vitdet_without_square_padding_is_refused(cases, tmp_path):
    cfg = copy.deepcopy(cases("vitdet").cfg)
    cfg.model.backbone.square_pad = 0
    with pytest.raises(UnsupportedExport, match=r"square padding.*square_pad"):
        export_model(cfg, str(tmp_path), device="cpu")


def test_an_export_wrong_at_another_size_is_not_written(cases, photos, tmp_path, monkeypatch):
    """DETR + iRPE with the bucket ids taken from the Python cache while tracing (as before
    they were computed from the traced grid): the trace holds the sample's grid, so the
    exporter's second-size check must refuse it and leave nothing behind."""
    cached = irpe._CACHE.get
    monkeypatch.setattr(
        irpe,
        "bucket_ids",
        lambda height, width, method, ratio, device=None, skip=0: cached(
            int(height), int(width), method, ratio, device or "cpu"
        ),
    )
    out = tmp_path / "exported"
    with pytest.raises(ExportError, match=r"does not match the eager model on a \d+x\d+ image"):
        case = cases("detr_irpe")
        export_model(case.cfg, str(out), sample_image=photos[0], predictor=case.eager)
    assert os.listdir(out) == []


def test_tool_exports_and_evaluates_a_shapes_model(tmp_path, capsys):
    """tools/export_model.py on a shipped config: ONNX, its test set's first image as the
    sample, --run-eval on 2 images (exported and eager AP side by side)."""
    config = os.path.join(REPO, "configs", "Shapes", "detr_tiny.py")
    torch.manual_seed(0)
    weights = S.save_checkpoint(instantiate(load_config(config).model), tmp_path)
    out = tmp_path / "exported"
    code = TOOL.main(
        [
            "--config-file",
            config,
            "--format",
            "onnx",
            "--output",
            str(out),
            "--device",
            "cpu",
            "--run-eval",
            "--eval-max-images",
            "2",
            "--opts",
            f"train.init_checkpoint={weights}",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "exported DETR to onnx by tracing" in printed
    assert "bbox/AP" in printed and "exported" in printed and "eager" in printed
    info = json.loads((out / "export.json").read_text())
    assert info["metadata"]["thing_classes"] == ["circle", "square", "triangle"]


def test_tool_unsupported_combination_is_one_line(capsys):
    code = TOOL.main(
        [
            "--config-file",
            os.path.join(REPO, "configs", "Shapes", "detr_tiny.py"),
            "--format",
            "onnx",
            "--export-method",
            "scripting",
            "--output",
            "unused",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ONNX export records the model")


def test_demo_draws_from_an_exported_model(cases, exports, photos, tmp_path):
    """demo/demo.py --exported: drawings and COCO JSON, category ids mapped back to COCO's (the
    tiny config's test set is coco_2017_val) from export.json's metadata."""
    case = cases("rcnn")
    _, exported = exports("rcnn")
    out = tmp_path / "drawn"
    code = DEMO.main(
        [
            "--exported",
            str(exported / "model.ts"),
            "--input",
            photos[0],
            "--output",
            str(out),
            "--json-output",
            str(out / "predictions.json"),
            "--confidence-threshold",
            "0",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert (out / "coffee.png").is_file()
    results = json.loads((out / "predictions.json").read_text())
    assert len(results) == len(case.eager(photos[1])["instances"]) > 0
    assert {r["category_id"] for r in results} <= set(COCO_CATEGORY_IDS)


def test_demo_exported_takes_no_config_options(photos, tmp_path, capsys):
    code = DEMO.main(
        [
            "--exported",
            str(tmp_path),
            "--input",
            photos[0],
            "--output",
            str(tmp_path / "drawn"),
            "--opts",
            "train.init_checkpoint=x.pth",
        ]
    )
    assert code == 2
    assert capsys.readouterr().err == (
        "error: --exported takes no --opts or --num-workers (export.json has the rest)\n"
    )


def test_onnx_is_imported_only_by_the_export_path():
    """``onnx`` / ``onnxruntime`` imports sit inside the functions that write or run ONNX."""
    import ast

    folder = os.path.join(REPO, "fpt", "export")
    for name in os.listdir(folder):
        if name.endswith(".py"):
            with open(os.path.join(folder, name)) as f:
                tree = ast.parse(f.read())
            for node in tree.body:  # module level only
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                    assert not any(n.split(".")[0] in ("onnx", "onnxruntime") for n in names), name


def test_compare_matches_instances_in_any_order_within_tolerance():
    from detectron2.structures import Boxes, Instances

    def instances(boxes, scores, classes):
        return Instances(
            (100, 100),
            pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
            scores=torch.tensor(scores),
            pred_classes=torch.tensor(classes),
        )

    eager = instances([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 3, 3]], [0.9, 0.9, 0.2], [0, 1, 2])
    same = instances([[5, 5, 20, 20.01], [0, 0, 10, 10]], [0.9, 0.9004], [1, 0])  # reordered
    problems, stats = compare_predictions({"instances": eager}, {"instances": same})
    assert problems == [] and stats["unmatched_eager"] == 1  # the 0.2 one: at the cut-off
    moved = instances([[0, 0, 10, 10], [5, 5, 20, 21]], [0.9, 0.9], [0, 1])
    problems, _ = compare_predictions({"instances": eager}, {"instances": moved})
    assert len(problems) == 2 and "has no counterpart" in problems[0]
    problems, _ = compare_predictions({"instances": eager}, {"sem_seg": torch.zeros(2, 5, 5)})
    assert problems
