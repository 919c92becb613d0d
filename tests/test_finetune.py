"""Fine-tuning on your own data: ``--register-coco-train/-test`` fit every head's class count to
the dataset (LazyConfig and yacs), class names reach evaluation and the predictor,
``train.freeze`` and ``train.val_loss_period``.

The custom set is the shapes set cut to 2 of its 3 classes (circle, square), as a user's COCO
json: 12 training and 2 test images."""

import json
import os

import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.events import EventStorage

from fpt.config import ConfigError, RunConfig, fit_num_classes, load_config
from fpt.engine.args import default_argument_parser
from fpt.engine.finetune import ValidationLossHook, freeze_parameters
from fpt.engine.main import prepare_config, run
from fpt.evaluation.plots import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["circle", "square"]


@pytest.fixture(scope="module")
def two_class_set(tmp_path_factory):
    """``{"train": (json, images), "test": (json, images)}``: shapes_val without triangles."""
    dicts = DatasetCatalog.get("shapes_val")  # generates the shapes set if needed
    images = os.path.dirname(dicts[0]["file_name"])
    with open(os.path.join(os.path.dirname(images), "shapes_val.json")) as f:
        coco = json.load(f)
    folder = tmp_path_factory.mktemp("two_classes")
    out = {}
    for split, part in (("train", coco["images"][:12]), ("test", coco["images"][12:14])):
        keep = {im["id"] for im in part}
        anns = [a for a in coco["annotations"] if a["image_id"] in keep and a["category_id"] < 3]
        data = dict(coco, images=part, annotations=anns, categories=coco["categories"][:2])
        path = folder / f"{split}.json"
        path.write_text(json.dumps(data))
        out[split] = (str(path), images)
    assert [c["name"] for c in coco["categories"][:2]] == CLASSES
    return out


def _argv(config, sets, out, *extra):
    return [
        "--config-file",
        config,
        "--register-coco-train",
        "my_train",
        *sets["train"],
        "--register-coco-test",
        "my_val",
        *sets["test"],
        "train.max_iter=1",
        "train.log_period=1",
        "train.plot=False",
        "train.checkpointer.period=100",
        "train.visualize.num_images=0",
        "dataloader.train.total_batch_size=1",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        f"train.output_dir={out}",
        *extra,
    ]


# (config, head weights -> expected first dimension): K = 2 classes
FAMILIES = {
    "mask_rcnn_R_18_FPN_tiny": {
        "roi_heads.box_predictor.cls_score.weight": 3,  # K + background
        "roi_heads.box_predictor.bbox_pred.weight": 8,  # 4 per class
        "roi_heads.mask_head.predictor.weight": 2,
    },
    "fpt_mask_rcnn_tiny": {"roi_heads.box_predictor.cls_score.weight": 3},
    "vitdet_mask_rcnn_tiny": {
        "roi_heads.box_predictor.cls_score.weight": 3,
        "roi_heads.mask_head.predictor.weight": 2,
    },
    "detr_tiny": {"class_embed.weight": 3},  # K + "no object"
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_fine_tunes_on_a_two_class_coco_json(family, two_class_set, tmp_path):
    """In process, through train_net.py's parser and run(): heads of 2 classes, evaluation
    per class name; the saved config.yaml registers the sets again and gives the class names
    (the demo's)."""
    config = f"configs/Shapes/{family}.py"
    run(_argv(config, two_class_set, tmp_path))
    weights = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    for name, rows in FAMILIES[family].items():
        assert weights["model"][name].shape[0] == rows, name
    results = json.loads((tmp_path / "inference" / "results_iter0000001.json").read_text())
    assert {f"AP-{c}" for c in CLASSES} <= set(results["bbox"]), results["bbox"]
    log = (tmp_path / "log.txt").read_text()
    key = "model.num_classes" if family == "detr_tiny" else "model.roi_heads.num_classes"
    assert f"training set 'my_train': 2 classes (circle, square): {key} 3 -> 2" in log

    saved = RunConfig(load_config(str(tmp_path / "config.yaml")))
    assert saved.train_dataset_names == ["my_train"] and saved.test_dataset_names == ["my_val"]
    DatasetCatalog.remove("my_val")  # as in a new process (the demo): the saved config registers
    MetadataCatalog.remove("my_val")
    assert list(saved.metadata.thing_classes) == CLASSES


def test_vitdet_readme_example_as_a_new_user(two_class_set, tmp_path):
    """The README's command with the COCO ViTDet config, no COCO on disk: the start-up checks
    (datasets registered and found, class counts) pass (the tiny ViTDet above trains)."""
    argv = _argv("configs/COCO/ViTDet/mask_rcnn_vitdet_b_100ep.py", two_class_set, tmp_path)
    config, message = prepare_config(default_argument_parser().parse_args(argv))
    assert message.endswith("model.roi_heads.num_classes 80 -> 2")
    assert config.train_dataset_names == ["my_train"] and config.test_dataset_names == ["my_val"]
    # --eval-only reads no training set: the test set's classes count
    argv = ["--eval-only", "--config-file", argv[1]] + argv[argv.index("--register-coco-test") :]
    config, message = prepare_config(default_argument_parser().parse_args(argv))
    assert message.startswith("Class counts from test set 'my_val': 2 classes")
    assert config.train_dataset_names == ["coco_2017_train"]


def test_mismatches_are_one_line_naming_both_numbers(two_class_set, tmp_path):
    config = "configs/Shapes/mask_rcnn_R_18_FPN_tiny.py"
    parser = default_argument_parser()
    args = parser.parse_args(
        _argv(config, two_class_set, tmp_path, "model.roi_heads.num_classes=5")
    )
    with pytest.raises(ConfigError, match=r"num_classes=5, but training set 'my_train' has 2 "):
        prepare_config(args)
    # the same count as the data is accepted
    args = parser.parse_args(
        _argv(config, two_class_set, tmp_path, "model.roi_heads.num_classes=2")
    )
    assert prepare_config(args)[1] is None
    # trained on 2 classes, tested on the 3-class shapes_val
    argv = _argv(config, two_class_set, tmp_path)
    argv = (
        argv[: argv.index("--register-coco-test")] + argv[argv.index("--register-coco-test") + 4 :]
    )
    with pytest.raises(ConfigError, match=r"'my_train' has 2 classes .* 'shapes_val' has 3 "):
        prepare_config(parser.parse_args(argv))


def test_yacs_and_cascade_and_semantic_heads(two_class_set, tmp_path):
    yaml = tmp_path / "retinanet.yaml"
    yaml.write_text(
        "MODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\n  ROI_HEADS:\n    NUM_CLASSES: 80\n"
    )
    parser = default_argument_parser()
    argv = _argv(str(yaml), two_class_set, tmp_path)
    argv = argv[: argv.index("train.max_iter=1")]  # LazyConfig overrides
    config, message = prepare_config(parser.parse_args(argv))
    assert message.endswith("MODEL.ROI_HEADS.NUM_CLASSES 80 -> 2")
    cfg = config.cfg
    assert cfg.is_frozen() and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2
    assert cfg.DATASETS.TRAIN == ("my_train",) and cfg.DATASETS.TEST == ("my_val",)
    assert [e[0] for e in cfg.DATASETS.REGISTER_COCO] == ["my_train", "my_val"]
    # the saved config registers the sets again: class names for the demo in a new process
    config.save(str(tmp_path / "config.yaml"))
    DatasetCatalog.remove("my_val")
    MetadataCatalog.remove("my_val")
    saved = RunConfig(load_config(str(tmp_path / "config.yaml")))
    assert list(saved.metadata.thing_classes) == CLASSES
    with pytest.raises(ConfigError, match="MODEL.ROI_HEADS.NUM_CLASSES=7, but .* has 2 "):
        prepare_config(parser.parse_args(argv + ["MODEL.ROI_HEADS.NUM_CLASSES", "7"]))

    # Cascade stages follow roi_heads.num_classes (interpolations): one key to set
    cascade = RunConfig(load_config("configs/COCO/ViTDet/cascade_mask_rcnn_vitdet_b_100ep.py"))
    cascade.use_datasets(train=["my_train"], test=["my_val"])
    assert fit_num_classes(cascade).endswith("model.roi_heads.num_classes 80 -> 2")
    heads = cascade.cfg.model.roi_heads
    assert [p.num_classes for p in heads.box_predictors] == [2, 2, 2]
    assert heads.mask_head.num_classes == 2

    # semantic heads follow the training set's stuff classes
    if "stuff5" not in DatasetCatalog.list():
        DatasetCatalog.register("stuff5", list)
    MetadataCatalog.get("stuff5").set(stuff_classes=[f"s{i}" for i in range(5)])
    semantic = RunConfig(load_config("configs/Cityscapes/semantic_R_50_FPT.py"))
    assert semantic.class_count_keys() == [("model.sem_seg_head.num_classes", 19, "stuff")]
    semantic.use_datasets(train=["stuff5"])
    with pytest.raises(ConfigError, match=r"'stuff5' has 5 classes .* has 19 "):
        fit_num_classes(semantic)  # tested on Cityscapes' 19 classes
    semantic.use_datasets(test=["stuff5"])
    fit_num_classes(semantic)
    assert semantic.cfg.model.sem_seg_head.num_classes == 5


def test_freeze_patterns_match_whole_name_parts():
    model = torch.nn.Module()
    model.blocks = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(12))
    model.head = torch.nn.Linear(2, 3)
    message = freeze_parameters(model, [r"blocks.[0-5]", "head.bias"])
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    expected = sorted([f"blocks.{i}.{w}" for i in range(6) for w in ("weight", "bias")])
    assert frozen == sorted(expected + ["head.bias"])  # not blocks.10 / blocks.11
    assert message == (
        "train.freeze: froze 13 parameter tensors (39 of 81 values) matching blocks.[0-5], head.bias"
    )
    with pytest.raises(ConfigError, match=r"^train.freeze: 'backbone' matches no parameter name"):
        freeze_parameters(model, ["backbone"])
    with pytest.raises(ConfigError, match=r"is not a regular expression"):
        freeze_parameters(model, ["blocks.["])


def test_freeze_and_validation_loss_in_training(two_class_set, tmp_path):
    """DETR (the fastest tiny family): train.freeze holds its ResNet's stages up to res4;
    val_<loss> rows land in metrics.json (plotted in metrics.png)."""
    run(
        _argv(
            "configs/Shapes/detr_tiny.py",
            two_class_set,
            tmp_path,
            "train.freeze=['backbone.(stem|res[2-4])']",
            "train.val_loss_period=1",
            "train.val_loss_batches=2",
            "train.checkpointer.period=1",
            "train.max_iter=2",
            "train.plot=True",
        )
    )
    log = (tmp_path / "log.txt").read_text()
    assert "train.freeze: froze" in log and "matching backbone.(stem|res[2-4])" in log
    rows = read_metrics(tmp_path / "metrics.json")
    val = [r for r in rows if "val_total_loss" in r]
    assert [r["iteration"] for r in val] == [0, 1]
    assert {"val_loss_ce", "val_loss_bbox", "val_loss_giou", "val_loss_ce_0"} <= set(val[0])
    assert val[0]["val_total_loss"] == pytest.approx(
        sum(v for k, v in val[0].items() if k.startswith("val_loss_"))
    )
    assert (tmp_path / "metrics.png").is_file()

    # the frozen stages did not move between the two steps; the rest did
    first, final = (
        torch.load(tmp_path / name, map_location="cpu", weights_only=True)["model"]
        for name in ("model_0000000.pth", "model_final.pth")
    )
    for name in ("backbone.stem.conv1.weight", "backbone.res4.1.conv2.weight"):
        assert torch.equal(first[name], final[name]), name
    for name in ("backbone.res5.1.conv2.weight", "class_embed.weight"):
        assert not torch.equal(first[name], final[name]), name


def test_validation_loss_hook_restores_buffers_and_rng(two_class_set):
    """The hook's values are the model's training-mode losses on the batches, averaged; BatchNorm
    statistics and the random generators are as before."""
    config, _ = prepare_config(
        default_argument_parser().parse_args(
            _argv("configs/Shapes/mask_rcnn_R_18_FPN_tiny.py", two_class_set, "/tmp/unused")
        )
    )
    model = config.build_model("cpu").train()
    dataset, mapper = config.val_loss_set()
    hook = ValidationLossHook(1, dataset, mapper, batch_size=1, num_batches=2)
    hook.trainer = type("T", (), {"iter": 0, "max_iter": 1})()
    before = {k: v.clone() for k, v in model.named_buffers()}
    torch.manual_seed(5)
    with EventStorage(0):
        values = hook.losses(model)
        after_rng = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(after_rng, torch.rand(1))
    for k, v in model.named_buffers():
        assert torch.equal(v, before[k]), k
    # reference: the same two batches (the loader's iterator draws its seed first), by hand
    torch.manual_seed(5)
    sums, batches = {}, iter(hook.loader)
    with EventStorage(0), torch.no_grad():
        for _ in range(2):
            for k, v in model(next(batches)).items():
                sums[k] = sums.get(k, 0.0) + float(v) / 2
    for k, v in sums.items():
        assert values[f"val_{k}"] == pytest.approx(v, rel=1e-4), k
