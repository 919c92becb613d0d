"""tools/benchmark.py, tools/visualize_data.py, tools/visualize_json_results.py and
tools/model_zoo.py on the shipped tiny configs and on COCO configs with random weights."""

import json
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.model_zoo import get_config_file
from detectron2.structures import BoxMode

from fpt.config import RunConfig, load_config
from fpt.modeling.detr import box_cxcywh_to_xyxy

from support import load_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")
BENCHMARK = load_module("tools_benchmark", os.path.join(TOOLS, "benchmark.py"))
VIS_DATA = load_module("tools_visualize_data", os.path.join(TOOLS, "visualize_data.py"))
VIS_JSON = load_module("tools_visualize_json", os.path.join(TOOLS, "visualize_json_results.py"))
MODEL_ZOO = load_module("tools_model_zoo", os.path.join(TOOLS, "model_zoo.py"))

MASK_RCNN_TINY = os.path.join(REPO, "configs", "Shapes", "mask_rcnn_R_18_FPN_tiny.py")
DETR_TINY = os.path.join(REPO, "configs", "Shapes", "detr_tiny.py")
DETR_COCO = os.path.join(REPO, "configs", "COCO", "DETR", "detr_r50_500ep.py")
SMALL_TRAIN = ["dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0"]

YACS_TINY = """\
_BASE_: "{base}"
MODEL: {{DEVICE: cpu, WEIGHTS: "{weights}", RESNETS: {{DEPTH: 18, RES2_OUT_CHANNELS: 64}},
        FPN: {{OUT_CHANNELS: 64}}, ROI_BOX_HEAD: {{FC_DIM: 256}}, ROI_HEADS: {{NUM_CLASSES: 3}}}}
DATASETS: {{TRAIN: [shapes_train], TEST: [shapes_val]}}
INPUT: {{MIN_SIZE_TEST: 96, MAX_SIZE_TEST: 128}}
DATALOADER: {{NUM_WORKERS: 0}}
OUTPUT_DIR: {output}
"""


def benchmark(tmp_path, capsys, *args):
    out = tmp_path / "bench.json"
    code = BENCHMARK.main(["--json-out", str(out), *args])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    return json.loads(out.read_text()), printed.out


def check_memory(memory):
    assert memory["peak_mb"] > 100 and memory["kind"]  # a process with torch holds more
    assert 0 <= memory["growth_mb"] <= memory["peak_mb"]


# ---- benchmark -----------------------------------------------------------------------------
def test_benchmark_inference_on_a_tiny_config(tmp_path, capsys):
    report, printed = benchmark(
        tmp_path,
        capsys,
        *("--config-file", MASK_RCNN_TINY, "--task", "inference", "--num-iter", "5"),
        *("--warmup", "1", "--device", "cpu"),
    )
    result = report["result"]
    assert report["task"] == "inference" and report["kind"] == "LazyConfig"
    assert result["images"] == 5 and result["distinct_images"] == 5
    assert result["input_sizes"] == [[128, 128]]  # shapes images, no test resize
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    # images/s is the inverse of the mean latency
    assert result["images_per_s"] == pytest.approx(1000 / latency["mean"], rel=1e-6)
    check_memory(result["memory"])
    assert result["weights"] == "random"
    assert "note: random weights (train.init_checkpoint is empty)" in printed
    assert "latency p99 ms" in printed and "images/s" in printed


def test_benchmark_train_and_data_steps(tmp_path, capsys):
    report, printed = benchmark(
        tmp_path,
        capsys,
        *("--config-file", MASK_RCNN_TINY, "--task", "train", "--num-iter", "2"),
        *("--warmup", "1", *SMALL_TRAIN),
    )
    result = report["result"]
    assert result["iterations"] == 2 and result["images_per_iter"] == 2
    assert result["iter_per_s"] > 0
    assert result["images_per_s"] == pytest.approx(2 * result["iter_per_s"])
    assert result["s_per_iter"] == pytest.approx(1 / result["iter_per_s"])
    check_memory(result["memory"])
    assert "iter/s" in printed

    report, _ = benchmark(
        tmp_path,
        capsys,
        *("--config-file", MASK_RCNN_TINY, "--task", "data", "--num-iter", "3", *SMALL_TRAIN),
    )
    result = report["result"]
    assert result["batches"] == 3 and result["images"] == 6  # 3 batches of 2
    assert result["images_per_s"] == pytest.approx(2 * result["batches_per_s"])
    assert "not its loader workers" in result["memory"]["kind"]


def test_benchmark_eval_of_a_yacs_config_with_its_checkpoint(tmp_path, capsys):
    """yacs: the checkpoint in MODEL.WEIGHTS is loaded; evaluation on 3 test images."""
    cfg_path = tmp_path / "tiny.yaml"
    weights = tmp_path / "w.pth"
    cfg_path.write_text(
        YACS_TINY.format(
            base=get_config_file("Base-RCNN-FPN.yaml"), weights="", output=tmp_path / "out"
        )
    )
    torch.manual_seed(0)
    model = RunConfig(load_config(str(cfg_path))).build_model("cpu")
    torch.save({"model": model.state_dict()}, weights)
    report, printed = benchmark(
        tmp_path,
        capsys,
        *("--config-file", str(cfg_path), "--task", "eval", "--num-iter", "3"),
        *("MODEL.WEIGHTS", str(weights)),
    )
    result = report["result"]
    assert report["kind"] == "yacs" and result["weights"] == str(weights)
    assert result["images"] == 3 and result["seconds"] > 0
    assert result["images_per_s"] == pytest.approx(3 / result["seconds"])
    assert "bbox/AP" in result["metrics"]
    check_memory(result["memory"])
    assert "note: random weights" not in printed


def test_benchmark_coco_config_with_random_weights(tmp_path, capsys):
    """A COCO config (DETR R-50, ImageNet backbone in train.init_checkpoint) timed with
    --random-weights on shapes images through its own test resize, made small."""
    report, printed = benchmark(
        tmp_path,
        capsys,
        *("--config-file", DETR_COCO, "--task", "inference", "--num-iter", "2"),
        *("--warmup", "1", "--random-weights", "--device", "cpu"),
        "dataloader.test.dataset.names=shapes_val",
        "dataloader.test.mapper.augmentations.0.short_edge_length=96",
        "dataloader.test.mapper.augmentations.0.max_size=160",
    )
    result = report["result"]
    assert result["images"] == 2 and result["input_sizes"] == [[96, 96]]
    assert result["images_per_s"] > 0 and result["latency_ms"]["p50"] > 0
    assert "--random-weights" in printed


def test_benchmark_bad_input_is_one_line(tmp_path, capsys):
    code = BENCHMARK.main(["--config-file", MASK_RCNN_TINY, "--task", "inference", "train.nope=1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nope" in err
    code = BENCHMARK.main(
        ["--config-file", MASK_RCNN_TINY, "--task", "inference", "train.init_checkpoint=/no.pth"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (
        "benchmark.py: error: checkpoint not found: /no.pth (from train.init_checkpoint)"
    )
    with pytest.raises(SystemExit):
        BENCHMARK.main(["--config-file", MASK_RCNN_TINY, "--task", "train", "--num-iter", "0"])
    assert "--num-iter must be >= 1" in capsys.readouterr().err


# ---- visualize_data ------------------------------------------------------------------------
def test_visualize_data_annotations(tmp_path, capsys):
    out = tmp_path / "vis"
    code = VIS_DATA.main(
        ["--config-file", MASK_RCNN_TINY, "--source", "annotation", "--output", str(out)]
        + ["--num-images", "2"]
    )
    assert code == 0
    assert str(out) in capsys.readouterr().out
    files = sorted(os.listdir(out))
    dicts = DatasetCatalog.get("shapes_train")[:2]
    assert files == [
        f"{i:03d}_{os.path.basename(d['file_name'])[:-4]}.png" for i, d in enumerate(dicts)
    ]
    for name, d in zip(files, dicts):
        image = cv2.imread(str(out / name))
        assert image.shape == (d["height"], 2 * d["width"] + 4, 3)
        # left: the image file itself (BGR, as cv2 reads both)
        assert np.array_equal(image[:, : d["width"]], cv2.imread(d["file_name"]))


def test_visualize_data_loader_images_are_the_model_inputs(tmp_path):
    """The left half of each PNG is the mapper's output tensor, pixel for pixel (RGB); the boxes
    drawn are DETR's normalized cxcywh targets in image coordinates."""
    run = RunConfig(load_config(DETR_TINY, SMALL_TRAIN))
    model = instantiate(run.cfg.model)
    panels = list(VIS_DATA.dataloader_panels(run, 3))
    assert len(panels) == 3
    for name, panel, model_input in panels:
        tensor = model_input["image"]  # RGB: detr_tiny's image_format
        h, w = tensor.shape[1:]
        assert panel.shape == (h, 2 * w + 4, 3)
        assert np.array_equal(panel[:, :w], tensor.permute(1, 2, 0).numpy())
        assert not np.array_equal(panel[:, w + 4 :], panel[:, :w])  # something is drawn
        target = model.prepare_targets([model_input], [(h, w)])[0]["boxes"]
        in_pixels = box_cxcywh_to_xyxy(target) * torch.tensor([w, h, w, h])
        drawn = model_input["instances"].gt_boxes.tensor
        assert torch.allclose(in_pixels, drawn, atol=1e-3)


def test_visualize_data_loader_tool_writes_pngs(tmp_path, capsys):
    out = tmp_path / "vis"
    code = VIS_DATA.main(
        ["--config-file", MASK_RCNN_TINY, "--source", "dataloader", "--output", str(out)]
        + ["--num-images", "3", *SMALL_TRAIN]
    )
    assert code == 0 and "model input | with its annotations drawn" in capsys.readouterr().out
    files = sorted(os.listdir(out))
    assert len(files) == 3
    for name in files:
        assert cv2.imread(str(out / name)).shape == (128, 260, 3)
    code = VIS_DATA.main(
        ["--config-file", MASK_RCNN_TINY, "--source", "dataloader", "--output", str(out)]
        + ["dataloader.train.dataset.names=nope"]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'nope'" in err


# ---- visualize_json_results ----------------------------------------------------------------
def shapes_results(dicts):
    """COCO results from the ground truth (score 0.9), plus one detection scoring 0.1."""
    results = []
    for d in dicts:
        for a in d["annotations"]:
            box = BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYWH_ABS)
            results.append(
                dict(image_id=d["image_id"], category_id=a["category_id"] + 1, bbox=box, score=0.9)
            )
        results.append(dict(image_id=d["image_id"], category_id=1, bbox=[0, 0, 10, 10], score=0.1))
    return results


def test_visualize_json_results(tmp_path, capsys):
    dicts = DatasetCatalog.get("shapes_val")[:2]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(shapes_results(dicts)))
    out = tmp_path / "vis"
    code = VIS_JSON.main(
        ["--input", str(results), "--dataset", "shapes_val", "--output", str(out)]
        + ["--num-images", "2"]
    )
    assert code == 0 and str(out) in capsys.readouterr().out
    for d in dicts:
        image = cv2.imread(str(out / (os.path.basename(d["file_name"])[:-4] + ".png")))
        assert image.shape == (2 * d["height"], 4 * d["width"] + 4, 3)  # drawn at twice the size

    # what is drawn: the detections above the threshold, in XYXY, contiguous classes
    d = dicts[0]
    by_image = VIS_JSON.read_results(str(results))
    metadata = MetadataCatalog.get("shapes_val")
    instances = VIS_JSON.results_to_instances(by_image[d["image_id"]], (128, 128), metadata, 0.5)
    expected = [
        BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]
    ]
    assert np.allclose(instances.pred_boxes.tensor.numpy(), np.array(expected), atol=1e-4)
    assert instances.pred_classes.tolist() == [a["category_id"] for a in d["annotations"]]
    assert (
        len(VIS_JSON.results_to_instances(by_image[d["image_id"]], (128, 128), metadata, 0.05))
        == len(expected) + 1
    )


def test_visualize_json_results_bad_category_is_one_line(tmp_path, capsys):
    d = DatasetCatalog.get("shapes_val")[0]
    results = tmp_path / "results.json"
    results.write_text(
        json.dumps([dict(image_id=d["image_id"], category_id=7, bbox=[0, 0, 5, 5], score=0.9)])
    )
    code = VIS_JSON.main(
        ["--input", str(results), "--dataset", "shapes_val", "--output", str(tmp_path / "v")]
        + ["--num-images", "1"]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "category_id 7 is not a category of shapes_val" in err


# ---- model_zoo -----------------------------------------------------------------------------
def test_model_zoo_card_of_a_coco_config(capsys):
    info = MODEL_ZOO.describe(os.path.relpath(DETR_COCO, REPO), [], count_flops=False)
    torch.manual_seed(0)
    model = instantiate(load_config(DETR_COCO).model)
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert info["test_size"] == [800, 1333] and info["gflops"] is None
    assert info["card"]["reference_ap"] == {"box": 42.0}
    text = MODEL_ZOO.format_card(info)
    assert "box AP 42.0" in text
    assert "python tools/convert_detr_checkpoint.py detr-r50-e632da11.pth" in text
    assert "train.init_checkpoint=detr_r50_500ep.pth" in text


def test_model_zoo_flops_are_counted_then_cached(tmp_path, capsys):
    cache = str(tmp_path / "flops.json")
    args = [MASK_RCNN_TINY, "--size", "64", "64", "--cache", cache]
    assert MODEL_ZOO.main(args) == 0
    first = capsys.readouterr().out
    assert "at 64x64 (counted in" in first and "no model card" in first
    assert MODEL_ZOO.main(args) == 0
    second = capsys.readouterr().out
    assert "(cached)" in second
    gflops = [line.split()[1] for line in (first + second).splitlines() if "FLOPs" in line]
    assert len(gflops) == 2 and gflops[0] == gflops[1] and float(gflops[0]) > 0


@pytest.mark.ci_once
def test_every_shipped_coco_config_has_a_model_card():
    paths = MODEL_ZOO.shipped_configs()
    assert len(paths) >= 20 and "configs/Cityscapes/semantic_R_50_FPT.py" in paths
    for path in paths:
        card = MODEL_ZOO.model_card(RunConfig(load_config(os.path.join(REPO, path))))
        assert {"reference_ap", "source", "weights", "convert"} <= card.keys(), path
        assert card["source"], path
        if card["convert"]:
            assert card["weights"] and card["convert"].startswith("python tools/"), path


def test_benchmark_device_and_compile_switch_the_configs_own_keys(tmp_path):
    """--device and --compile become the config's keys, so the trainer and the predictor both
    follow them (LazyConfig: train.*, yacs: MODEL.DEVICE, SOLVER.COMPILE)."""
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(
        YACS_TINY.format(base=get_config_file("Base-RCNN-FPN.yaml"), weights="", output=tmp_path)
    )
    for path in (MASK_RCNN_TINY, str(cfg_path)):
        assert RunConfig(load_config(path)).compile_settings is None
        run = BENCHMARK.load_run(path, [], device="meta", compile=True)
        assert run.device == "meta" and run.compile_settings["mode"] == "default"
