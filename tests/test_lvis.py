"""LVIS: resumable repeat-factor sampling, the federated-loss box predictor, the LVIS-format
shapes set with detectron2's LVISEvaluator (the ``lvis`` package), and the LVIS v1 configs."""

import functools
import inspect
import itertools
import json
import math
import os

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.config import get_cfg, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.evaluation import LVISEvaluator
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Boxes, Instances
from detectron2.structures.masks import polygons_to_bitmask
from detectron2.utils.events import EventStorage

from fpt.data import DatasetError
from fpt.data.lvis import fed_loss_class_weights, register_lvis
from fpt.config import RunConfig, add_training_config
from fpt.data.samplers import RepeatFactorSampler, build_resumable_sampler, repeat_factors
from fpt.engine import Trainer, load_config
from fpt.modeling import FedLossFastRCNNOutputLayers
from fpt.modeling.fed_loss import fed_loss_classes, sigmoid_ce_loss

# 10 images: class 0 on 9, class 1 on 2, class 2 on 1; the last image has no annotations
CATEGORIES = [[0]] * 7 + [[0, 1], [0, 1, 2, 2], []]


def _dicts(categories_per_image):
    return [{"annotations": [{"category_id": c} for c in cats]} for cats in categories_per_image]


def test_repeat_factors_follow_the_lvis_formula():
    dicts = _dicts(CATEGORIES)
    # f = 0.9, 0.2, 0.1; t = 0.5: r(c) = max(1, sqrt(t / f)) = 1, sqrt(2.5), sqrt(5)
    expected = [1.0] * 7 + [math.sqrt(2.5), math.sqrt(5.0), 1.0]
    torch.testing.assert_close(repeat_factors(dicts, 0.5), torch.tensor(expected))
    torch.testing.assert_close(
        repeat_factors(dicts, 0.5, sqrt=False), torch.tensor([1.0] * 7 + [2.5, 5.0, 1.0])
    )
    assert torch.equal(
        repeat_factors(dicts, 0.5),
        RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, 0.5),
    )


def test_repeat_factor_sampler_is_detectron2s_stream_and_resumes_it():
    dicts = _dicts(CATEGORIES)
    reference = RepeatFactorTrainingSampler(repeat_factors(dicts, 0.5), seed=7)
    stream = list(itertools.islice(iter(reference), 400))
    sampler = RepeatFactorSampler(dicts, 0.5, seed=7)
    assert list(itertools.islice(iter(sampler), 400)) == stream
    counts = np.bincount(stream, minlength=10)
    assert counts[9] * 1.8 < counts[8] < counts[9] * 2.8  # image 8 repeated sqrt(5) = 2.24 x

    resumed = RepeatFactorSampler(dicts, 0.5, seed=123)  # its seed comes from the state
    resumed.load_state_dict(sampler.state_dict())
    resumed.resume_at(23)
    assert resumed.state_dict() == {"seed": 7, "start": 23}
    assert list(itertools.islice(iter(resumed), 50)) == stream[23:73]


def test_yacs_repeat_factor_sampling_and_lvis_evaluator():
    cfg = get_cfg()
    add_training_config(cfg)
    cfg.DATASETS.TRAIN = ("shapes_lvis_train",)
    cfg.DATALOADER.SAMPLER_TRAIN = "RepeatFactorTrainingSampler"
    cfg.DATALOADER.REPEAT_THRESHOLD = 0.1
    cfg.DATALOADER.NUM_WORKERS = 0
    run = RunConfig(cfg)
    _, sampler = run.build_train_loader(functools.partial(build_resumable_sampler, seed=3))
    assert isinstance(sampler, RepeatFactorSampler) and sampler.state_dict()["seed"] == 3
    expected = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
        get_detection_dataset_dicts("shapes_lvis_train"), 0.1  # images with annotations
    )
    assert torch.equal(sampler.repeat_factors, expected)
    evaluator = run.build_evaluator("shapes_lvis_val")
    assert isinstance(evaluator, LVISEvaluator) and evaluator._max_dets_per_image == 100


def test_federated_loss_counts_the_present_and_the_drawn_classes():
    torch.manual_seed(0)
    k = 6
    logits = torch.randn(5, k + 1)
    gt = torch.tensor([1, 1, 4, 6, 6])  # 6: background
    weight = torch.tensor([1.0, 0.0, 2.0, 3.0, 1.0, 0.0])  # 1 and 5 are never drawn
    classes = fed_loss_classes(gt, 4, k, weight)
    assert sorted(classes[:3].tolist()) == [1, 4, 6] and len(classes) == 4
    assert classes[3].item() in (0, 2, 3)
    counted = [c for c in classes.tolist() if c < k]

    p = logits[:, :k].sigmoid()
    y = torch.zeros(5, k)
    y[[0, 1, 2], [1, 1, 4]] = 1
    bce = -(y * p.log() + (1 - y) * (1 - p).log())
    torch.testing.assert_close(sigmoid_ce_loss(logits, gt, classes), bce[:, counted].sum() / 5)
    torch.testing.assert_close(sigmoid_ce_loss(logits, gt), bce.sum() / 5)


def _predictor_inputs():
    torch.manual_seed(0)
    proposals = []
    for n in (4, 3):
        inst = Instances((64, 64))
        xy = torch.rand(n, 2) * 40
        inst.proposal_boxes = Boxes(torch.cat([xy, xy + 10 + torch.rand(n, 2) * 10], 1))
        inst.gt_boxes = Boxes(inst.proposal_boxes.tensor + torch.randn(n, 4))
        inst.gt_classes = torch.randint(0, 6, (n,))  # 5: background
        proposals.append(inst)
    return torch.randn(7, 16), proposals


@pytest.mark.skipif(
    "use_fed_loss" not in inspect.signature(FastRCNNOutputLayers.__init__).parameters,
    reason="this detectron2 (0.6) has no federated loss to compare with",
)
def test_fed_loss_predictor_matches_detectron2_mains():
    common = dict(
        input_shape=ShapeSpec(channels=16),
        box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
        num_classes=5,
        test_score_thresh=0.1,
    )
    weights = torch.tensor([4.0, 1.0, 9.0, 2.0, 1.0])
    ours = FedLossFastRCNNOutputLayers(
        **common,
        use_sigmoid_ce=True,
        use_fed_loss=True,
        fed_loss_datasets="unused",
        fed_loss_num_classes=4,
    )
    ours.fed_loss_cls_weights = weights
    upstream = FastRCNNOutputLayers(
        **common,
        use_sigmoid_ce=True,
        use_fed_loss=True,
        get_fed_loss_cls_weights=lambda: weights,
        fed_loss_num_classes=4,
    )
    upstream.load_state_dict(ours.state_dict(), strict=False)
    features, proposals = _predictor_inputs()
    predictions = ours(features)
    for seed in range(3):  # other draws of negative classes
        losses = []
        for predictor in (ours, upstream):
            torch.manual_seed(seed)
            with EventStorage():
                losses.append(predictor.losses(predictions, proposals))
        torch.testing.assert_close(losses[0], losses[1])
    for a, b in zip(
        ours.predict_probs(predictions, proposals), upstream.predict_probs(predictions, proposals)
    ):
        torch.testing.assert_close(a, b)


def _shapes_val_predictions(noisy):
    """Per image of ``shapes_lvis_val``: (input, output) with its ground truth as predictions;
    ``noisy``: every third instance dropped, boxes and masks shifted, scores at random, and a
    false positive of another class."""
    with open(MetadataCatalog.get("shapes_lvis_val").json_file) as f:
        gt = json.load(f)
    rng = np.random.default_rng(0)
    by_image = {img["id"]: [] for img in gt["images"]}
    for a in gt["annotations"]:
        by_image[a["image_id"]].append(a)
    pairs = []
    for img in gt["images"]:
        h, w = img["height"], img["width"]
        anns = by_image[img["id"]]
        if noisy:
            anns = [a for i, a in enumerate(anns) if i % 3 != 2]
            anns = anns + [{**anns[0], "category_id": anns[0]["category_id"] % 3 + 1}]
        shift = rng.integers(0, 4, size=len(anns)) if noisy else np.zeros(len(anns), int)
        boxes, masks = [], []
        for a, s in zip(anns, shift):
            x, y, bw, bh = a["bbox"]
            boxes.append([x + s, y, x + bw + s, y + bh])
            masks.append(np.roll(polygons_to_bitmask(a["segmentation"], h, w), int(s), axis=1))
        inst = Instances((h, w))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.scores = torch.tensor(rng.random(len(anns)) if noisy else np.ones(len(anns)))
        inst.pred_classes = torch.tensor([a["category_id"] - 1 for a in anns])
        inst.pred_masks = torch.from_numpy(np.stack(masks)).bool()
        pairs.append(({"image_id": img["id"]}, {"instances": inst}))
    return pairs


def _lvis_results(pairs):
    evaluator = LVISEvaluator("shapes_lvis_val", distributed=False, max_dets_per_image=300)
    evaluator.reset()
    for inp, out in pairs:
        evaluator.process([inp], [out])
    return evaluator.evaluate()


def _coco_ap(pairs, iou_type):
    """pycocotools' AP (in %) of the same predictions on the shapes set's COCO json (the val
    set is annotated exhaustively and lists every absent class as negative: LVIS's federated
    evaluation counts every detection, as COCO's does)."""
    coco = COCO(MetadataCatalog.get("shapes_val").json_file)
    results = []
    for inp, out in pairs:
        inst = out["instances"]
        for box, score, cls, mask in zip(
            inst.pred_boxes.tensor.tolist(),
            inst.scores.tolist(),
            inst.pred_classes.tolist(),
            inst.pred_masks.numpy(),
        ):
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            x0, y0, x1, y1 = box
            results.append(
                {
                    "image_id": inp["image_id"],
                    "category_id": cls + 1,
                    "score": score,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "segmentation": rle,
                }
            )
    ev = COCOeval(coco, coco.loadRes(results), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats[0] * 100


def test_lvis_evaluator_on_the_shapes_lvis_set():
    DatasetCatalog.get("shapes_lvis_val")  # writes the LVIS jsons
    perfect = _lvis_results(_shapes_val_predictions(noisy=False))
    for task in ("bbox", "segm"):
        assert set(perfect[task]) == {
            "AP",
            "AP50",
            "AP75",
            "APs",
            "APm",
            "APl",
            "APr",
            "APc",
            "APf",
        }
        for key in ("AP", "AP50", "AP75", "APr", "APc", "APf"):
            assert perfect[task][key] == pytest.approx(100.0), (task, key)

    pairs = _shapes_val_predictions(noisy=True)
    noisy = _lvis_results(pairs)
    for task in ("bbox", "segm"):
        assert 10 < noisy[task]["AP"] < 90
        assert noisy[task]["AP"] == pytest.approx(_coco_ap(pairs, task), abs=1e-6)


def test_shapes_lvis_set_is_federated_and_long_tailed():
    train = DatasetCatalog.get("shapes_lvis_train")
    with open(MetadataCatalog.get("shapes_lvis_train").json_file) as f:
        categories = json.load(f)["categories"]
    assert [c["frequency"] for c in categories] == ["f", "c", "r"]
    images_with = [
        sum(any(a["category_id"] == k for a in d["annotations"]) for d in train) for k in range(3)
    ]
    assert images_with == [c["image_count"] for c in categories]
    torch.testing.assert_close(
        fed_loss_class_weights("shapes_lvis_train"),
        torch.tensor([c["image_count"] ** 0.5 for c in categories]),
    )
    assert all(
        set(d["neg_category_ids"]).isdisjoint(a["category_id"] + 1 for a in d["annotations"])
        for d in train
    )


def test_register_lvis_takes_any_name(tmp_path):
    meta = MetadataCatalog.get("shapes_lvis_train")
    DatasetCatalog.get("shapes_lvis_train")  # writes the json
    register_lvis("my_lvis", meta.json_file, meta.image_root)
    mine = MetadataCatalog.get("my_lvis")
    assert mine.evaluator_type == "lvis" and mine.thing_classes == ["circle", "square", "triangle"]
    assert [c["image_count"] for c in mine.class_image_count] == [158, 36, 6]
    assert len(DatasetCatalog.get("my_lvis")) == 256
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 2}]}))
    with pytest.raises(DatasetError, match=r"bad\.json.*category ids are not 1\.\.K"):
        register_lvis("bad_lvis", str(bad), str(tmp_path))


@pytest.mark.slow
def test_tiny_lvis_model_trains_resumes_its_sample_stream_and_evaluates(repo_root, tmp_path):
    path = os.path.join(repo_root, "configs/Shapes/vitdet_mask_rcnn_lvis_tiny.py")
    opts = [
        "train.max_iter=2",
        "train.eval_period=2",
        "train.seed=-1",  # the sampler's seed is drawn at random: the resumed run must reuse it
        f"train.output_dir={tmp_path}",
        "train.plot=False",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "model.roi_heads.box_predictor.test_topk_per_image=10",
    ]
    trainer = Trainer(load_config(path, opts))
    assert isinstance(trainer.sampler, RepeatFactorSampler)
    seed = trainer.sampler.state_dict()["seed"]
    consumed, loader = [], trainer._trainer.data_loader
    trainer._trainer.data_loader = (
        consumed.append([d["image_id"] for d in b]) or b for b in loader
    )
    trainer.resume_or_load(resume=False)
    results = trainer.train()

    # the images seen: detectron2's own sampler and repeat factors, with the run's seed
    dataset = get_detection_dataset_dicts("shapes_lvis_train")  # images with annotations
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dataset, 0.1)
    assert factors.max() > 1.5  # the rare class is repeated
    stream = itertools.islice(iter(RepeatFactorTrainingSampler(factors, seed=seed)), 6)
    ids = [dataset[i]["image_id"] for i in stream]
    assert consumed == [ids[0:2], ids[2:4]]

    resumed = Trainer(load_config(path, opts))  # draws another seed
    resumed.resume_or_load(resume=True)
    assert resumed.sampler.state_dict() == {"seed": seed, "start": 4}
    assert [d["image_id"] for d in next(iter(resumed._trainer.data_loader))] == ids[4:6]
    for hook in resumed._hooks:  # (it does not train: close the metrics files it opened)
        for writer in getattr(hook, "_writers", ()):
            writer.close()

    for task in ("bbox", "segm"):
        assert {"AP", "APr", "APc", "APf"} <= set(results[task])
        assert all(math.isfinite(v) for v in results[task].values())


@pytest.mark.parametrize(
    "name, fed_loss, score_thresh",
    [("mask_rcnn_vitdet_b_100ep.py", True, 0.02), ("mask_rcnn_R_50_FPT_1x.py", False, 0.0001)],
)
def test_lvis_v1_configs_build_1203_class_models(repo_root, name, fed_loss, score_thresh):
    cfg = load_config(os.path.join(repo_root, "configs/LVIS", name))
    assert cfg.dataloader.train.dataset.names == "lvis_v1_train"
    assert cfg.dataloader.test.dataset.names == "lvis_v1_val"
    sampler = cfg.dataloader.train.sampler
    assert sampler._target_ is RepeatFactorSampler and sampler.repeat_thresh == 0.001
    assert cfg.dataloader.evaluator._target_ is LVISEvaluator
    assert cfg.dataloader.evaluator.dataset_name == "lvis_v1_val"
    assert cfg.dataloader.evaluator.max_dets_per_image == 300

    model = instantiate(cfg.model)  # random weights
    predictor = model.roi_heads.box_predictor
    assert predictor.num_classes == 1203 and predictor.cls_score.out_features == 1204
    assert model.roi_heads.mask_head.predictor.out_channels == 1203
    assert predictor.test_topk_per_image == 300 and predictor.test_score_thresh == score_thresh
    assert isinstance(predictor, FedLossFastRCNNOutputLayers) is fed_loss
    if fed_loss:
        assert predictor.use_sigmoid_ce and predictor.use_fed_loss
        assert predictor.fed_loss_datasets == "lvis_v1_train"
        assert predictor.fed_loss_num_classes == 50
        assert predictor.fed_loss_freq_weight_power == 0.5
