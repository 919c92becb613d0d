"""fpt.config.RunConfig: one object answers the engine's, the predictor's and the demo's questions
for a LazyConfig and a yacs config alike."""

import os
import pickle

import pytest
import torch
from detectron2.model_zoo import get_config_file

from fpt.config import ConfigError, RunConfig, load_config
from fpt.config.lazy_run import LazyRunConfig
from fpt.config.yacs_run import YacsRunConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = os.path.join(REPO, "configs", "Shapes", "mask_rcnn_R_18_FPN_tiny.py")

YACS = """\
_BASE_: "{base}"
MODEL: {{DEVICE: cpu, WEIGHTS: w.pth, RESNETS: {{DEPTH: 18, RES2_OUT_CHANNELS: 64}},
        ROI_HEADS: {{NUM_CLASSES: 3}}}}
DATASETS: {{TRAIN: [shapes_train], TEST: [shapes_val]}}
INPUT: {{MIN_SIZE_TEST: 96, MAX_SIZE_TEST: 160, FORMAT: RGB}}
OUTPUT_DIR: out/yacs
SEED: 3
"""


@pytest.fixture
def configs(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(YACS.format(base=get_config_file("Base-RCNN-FPN.yaml")))
    lazy = load_config(
        SHAPES,
        ["train.device=cpu", "train.init_checkpoint=w.pth", "train.output_dir=out/lazy"],
    )
    return RunConfig(lazy), RunConfig(load_config(str(path)))


def test_one_class_per_kind_and_of_keeps_a_run_config(configs):
    lazy, yacs = configs
    assert type(lazy) is LazyRunConfig and type(yacs) is YacsRunConfig
    assert RunConfig.of(lazy) is lazy and RunConfig.of(lazy.cfg) is not lazy
    assert isinstance(RunConfig.of(yacs.cfg), YacsRunConfig)


def test_both_kinds_answer_the_same_questions(configs):
    lazy, yacs = configs
    resizes = {lazy: [], yacs: ["ResizeShortestEdge"]}  # the shapes set is tested at its size
    for run, out, fmt in ((lazy, "out/lazy", "BGR"), (yacs, "out/yacs", "RGB")):
        assert run.device == "cpu" and run.weights == "w.pth"
        assert run.output_dir == out
        assert run.train_dataset_names == ["shapes_train"]
        assert run.test_dataset_names == ["shapes_val"]
        assert run.dataset_names == ["shapes_train", "shapes_val"]
        assert list(run.metadata.thing_classes) == ["circle", "square", "triangle"]
        assert run.input_format() == fmt
        assert [type(a).__name__ for a in run.test_augmentations().augs] == resizes[run]
        assert run.evaluation_sets == [("shapes_val" if run is yacs else None, "shapes_val")]
        assert list(run.datasets_to_register) == []
        assert run.cudnn_benchmark is False
        s = run.train_settings()
        assert s.device == "cpu" and s.init_checkpoint == "w.pth" and s.output_dir == out
    assert (lazy.weights_key, yacs.weights_key) == ("train.init_checkpoint", "MODEL.WEIGHTS")
    assert yacs.train_settings().seed == 3 and yacs.visualize == (0, 0.5)


def test_the_model_is_built_on_the_asked_device_and_the_config_is_left_alone(configs):
    _, yacs = configs
    model = yacs.build_model(torch.device("cpu"))
    assert next(model.parameters()).device.type == "cpu"
    assert yacs.input_format(model) == model.input_format
    assert yacs.cfg.is_frozen()


def test_a_lazy_config_without_a_model_is_one_line(configs):
    lazy, _ = configs
    del lazy.cfg.model
    with pytest.raises(ConfigError, match="^LazyConfig has no 'model' to build$"):
        lazy.build_model()


def test_a_run_config_pickles_for_worker_processes(configs):
    for run in configs:
        again = pickle.loads(pickle.dumps(run))
        assert type(again) is type(run) and again.test_dataset_names == ["shapes_val"]


def test_configs_are_saved(configs, tmp_path):
    lazy, yacs = configs
    for run in configs:
        run.save(str(tmp_path / f"{run.kind}.yaml"))
    assert "out/lazy" in (tmp_path / "LazyConfig.yaml").read_text()
    again = RunConfig(load_config(str(tmp_path / "yacs.yaml")))
    assert type(again) is YacsRunConfig and again.output_dir == "out/yacs"


def test_test_set_and_evaluator_of_both_kinds(configs, monkeypatch):
    """What ``tools/export_model.py --run-eval`` takes a part of: the test set's dicts and
    mapper, and the evaluator (COCO for detectors, SemSeg for a yacs SemanticSegmentor, COCO for
    a LazyConfig without ``dataloader.evaluator``)."""
    from detectron2.evaluation import COCOEvaluator

    from fpt.config import yacs_run

    for run in configs:
        dataset, mapper = run.test_set()
        assert len(dataset) == 64 and dataset[0]["file_name"].endswith(".png")
        image = mapper(dict(dataset[0]))["image"]
        assert image.shape[0] == 3 and image.dtype == torch.uint8
        assert type(run.build_evaluator("shapes_val")) is COCOEvaluator
    lazy, yacs = configs
    del lazy.cfg.dataloader.evaluator
    assert lazy.build_evaluator()._metadata.name == "shapes_val"
    yacs.cfg.defrost()
    yacs.cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    # (SemSegEvaluator reads the dataset's sem_seg files when built; the shapes set has none)
    monkeypatch.setattr(yacs_run, "SemSegEvaluator", lambda name, output_dir: (name, output_dir))
    assert yacs.build_evaluator(output_dir="o") == ("shapes_val", "o")


def test_set_weights_in_the_config_itself(configs):
    for run in configs:
        frozen = getattr(run.cfg, "is_frozen", lambda: False)()
        run.set_weights("other.pth")
        assert run.weights == "other.pth" and run.train_settings().init_checkpoint == "other.pth"
        assert getattr(run.cfg, "is_frozen", lambda: False)() == frozen


def test_the_old_config_loading_module_still_works_and_says_where_to_go():
    import importlib
    import sys

    sys.modules.pop("fpt.config_loading", None)
    with pytest.warns(FutureWarning, match="import from fpt.config"):
        old = importlib.import_module("fpt.config_loading")
    assert old.load_config is load_config and old.ConfigError is ConfigError
