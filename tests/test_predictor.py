"""fpt.predictor.Predictor (LazyConfig and yacs), config loading, image reading, COCO JSON, and
the video pipeline, on tiny randomly initialised Mask R-CNNs saved as checkpoints."""

import importlib.util
import json
import os
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from faster_coco_eval.core import mask as mask_util  # pycocotools' decode warns on numpy 2
from pycocotools.coco import COCO

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from fpt.config import ConfigError, load_config
from fpt.inference import (
    CocoResultsWriter,
    ImageReadError,
    assign_image_ids,
    expand_inputs,
    read_image,
    run_pipeline,
)
from fpt.predictor import Predictor


def _support():
    if "demo_support" not in sys.modules:
        path = os.path.join(os.path.dirname(__file__), "data", "demo_support.py")
        spec = importlib.util.spec_from_file_location("demo_support", path)
        sys.modules["demo_support"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["demo_support"]


S = _support()


@pytest.fixture(scope="module")
def lazy_ckpt(tmp_path_factory):
    return S.tiny_lazy_checkpoint(tmp_path_factory.mktemp("lazy"))


def lazy_cfg(ckpt, *opts):
    return load_config(S.TINY_LAZY, [f"train.init_checkpoint={ckpt}", *opts])


def capture_inputs(predictor):
    """Record the batched inputs the model receives."""
    seen = []
    predictor.model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    return seen


def expected_resize(h, w, short, longest):
    """ResizeShortestEdge's output size, by its documented rule."""
    scale = short / min(h, w)
    if max(h, w) * scale > longest:
        scale = longest / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


# ---- model building, resize, channel order, coordinates ----
@pytest.mark.parametrize("short,longest", [(128, 200), (96, 96)])  # FPN-style, ViTDet LSJ-style
def test_test_resize_comes_from_config_and_outputs_are_in_original_coordinates(
    lazy_ckpt, short, longest
):
    cfg = lazy_cfg(lazy_ckpt)
    cfg.dataloader.test.mapper.augmentations = [
        L(T.ResizeShortestEdge)(short_edge_length=short, max_size=longest)
    ]
    predictor = Predictor(cfg, score_threshold=0.0, batch_size=2)
    seen = capture_inputs(predictor)
    images = [S.constant_image(300, 451, (10, 100, 200)), S.constant_image(200, 120, (1, 2, 3))]
    outputs = predictor.predict(images)
    for image, given, out in zip(images, seen[0], outputs):
        h, w = image.shape[:2]
        assert tuple(given["image"].shape) == (3, *expected_resize(h, w, short, longest))
        assert (given["height"], given["width"]) == (h, w)
        instances = out["instances"]
        assert instances.image_size == (h, w) and len(instances) > 0
        boxes = instances.pred_boxes.tensor
        assert boxes.device.type == "cpu"
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert instances.pred_masks.shape[1:] == (h, w)


@pytest.mark.parametrize("model_format", ["BGR", "RGB"])
@pytest.mark.parametrize("image_format", ["BGR", "RGB"])
def test_channel_order_follows_model_input_format(lazy_ckpt, model_format, image_format):
    cfg = lazy_cfg(lazy_ckpt, f"model.input_format={model_format}")
    predictor = Predictor(cfg, image_format=image_format)
    assert predictor.input_format == model_format
    seen = capture_inputs(predictor)
    rgb = (10, 100, 200)
    image = S.constant_image(64, 80, rgb if image_format == "RGB" else rgb[::-1])
    predictor(image)
    first_channel = seen[0][0]["image"][0]
    assert torch.all(first_channel == (rgb[0] if model_format == "RGB" else rgb[2]))


def test_weights_are_loaded_from_the_checkpoint(lazy_ckpt):
    predictor = Predictor(lazy_cfg(lazy_ckpt))
    saved = torch.load(lazy_ckpt, map_location="cpu", weights_only=False)["model"]
    for name, value in predictor.model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    torch.manual_seed(1)
    fresh = instantiate(lazy_cfg(lazy_ckpt).model)
    name = "roi_heads.box_predictor.cls_score.weight"
    assert not torch.equal(fresh.state_dict()[name], saved[name])
    assert not predictor.model.training
    assert predictor.metadata.name == "coco_2017_val"


def sorted_by_box(instances):
    """Instances in a canonical order (by box), as equal scores may come in any order."""
    boxes = instances.pred_boxes.tensor
    order = sorted(range(len(instances)), key=lambda i: boxes[i].tolist())
    return instances[torch.as_tensor(order, dtype=torch.long)]


def test_batched_prediction_equals_one_by_one(lazy_ckpt):
    photo = np.asarray(S.skimage_photo("astronaut.png", max_side=160))
    mirrored = np.ascontiguousarray(photo[:, ::-1])
    batched = Predictor(lazy_cfg(lazy_ckpt), batch_size=2, score_threshold=0.3).predict(
        [photo, mirrored]
    )
    single = Predictor(lazy_cfg(lazy_ckpt), batch_size=1, score_threshold=0.3)
    for image, out in zip([photo, mirrored], batched):  # same size: the same padding
        ref = sorted_by_box(single(image)["instances"])
        got = sorted_by_box(out["instances"])
        assert len(got) == len(ref) > 0
        torch.testing.assert_close(
            got.pred_boxes.tensor, ref.pred_boxes.tensor, atol=1e-3, rtol=1e-4
        )
        torch.testing.assert_close(got.scores, ref.scores, atol=1e-4, rtol=1e-4)
        assert torch.equal(got.pred_classes, ref.pred_classes)
    # outputs are not mixed up between images: the mirrored photo gives other boxes
    a, b = (sorted_by_box(o["instances"]).pred_boxes.tensor for o in batched)
    assert a.shape != b.shape or not torch.allclose(a, b, atol=1.0)
    # images of different sizes in one batch: each output has its own image's size
    sizes = [(160, 160), (100, 150), (90, 60)]
    images = [S.constant_image(h, w, (50 * i, 90, 120)) for i, (h, w) in enumerate(sizes)]
    outputs = Predictor(lazy_cfg(lazy_ckpt), batch_size=3, score_threshold=0.0).predict(images)
    assert [o["instances"].image_size for o in outputs] == sizes


def test_score_threshold_keeps_exactly_the_confident_detections(lazy_ckpt):
    image = np.asarray(S.skimage_photo("chelsea.png", max_side=160))
    low = Predictor(lazy_cfg(lazy_ckpt), score_threshold=0.05)(image)["instances"]
    scores = low.scores.unique().sort().values  # a threshold between two scores
    threshold = float(scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    high_predictor = Predictor(lazy_cfg(lazy_ckpt), score_threshold=threshold)
    assert high_predictor.model.roi_heads.box_predictor.test_score_thresh == threshold
    high = high_predictor(image)["instances"]
    expected = low[low.scores >= threshold]
    assert 0 < len(high) == len(expected) < len(low)
    torch.testing.assert_close(high.scores, expected.scores)
    torch.testing.assert_close(high.pred_boxes.tensor, expected.pred_boxes.tensor)


def test_yacs_config(tmp_path):
    path = S.tiny_yacs_config(tmp_path)
    cfg = load_config(path)
    torch.manual_seed(0)
    weights = S.save_checkpoint(build_model(cfg), tmp_path)
    cfg = load_config(path, ["MODEL.WEIGHTS", weights, "TEST.DETECTIONS_PER_IMAGE", "7"])
    predictor = Predictor(cfg, score_threshold=0.0, device="cpu")
    seen = capture_inputs(predictor)
    image = np.asarray(S.skimage_photo("rocket.jpg", max_side=200))  # 200 x 134
    instances = predictor(image)["instances"]
    assert tuple(seen[0][0]["image"].shape[1:]) == expected_resize(*image.shape[:2], 96, 160)
    assert instances.image_size == image.shape[:2] and 0 < len(instances) <= 7
    assert predictor.input_format == "BGR" and predictor.metadata.name == "coco_2017_val"
    saved = torch.load(weights, map_location="cpu", weights_only=False)["model"]
    assert torch.equal(
        predictor.model.state_dict()["proposal_generator.rpn_head.conv.weight"],
        saved["proposal_generator.rpn_head.conv.weight"],
    )


# ---- bad configs and checkpoints: one clear line ----
@pytest.mark.parametrize(
    "opts,message",
    [
        (["train.init_checkpoint="], "no checkpoint given: set train.init_checkpoint=PATH"),
        (
            ["train.init_checkpoint=/nonexistent/model.pth"],
            "checkpoint not found: /nonexistent/model.pth",
        ),
        (
            ["train.init_chekpoint=x.pth"],
            "unknown config key 'train.init_chekpoint' in override "
            "'train.init_chekpoint=x.pth'; closest valid keys: train.init_checkpoint",
        ),
        (
            ["model.roi_heads.box_predictr.test_score_thresh=0.1"],
            "unknown config key 'model.roi_heads.box_predictr.test_score_thresh'",
        ),
        (
            ["model.roi_heads.box_predictor.test_topk=3"],
            "unknown config key 'model.roi_heads.box_predictor.test_topk'",
        ),
    ],
)
def test_lazy_config_errors_are_one_line(opts, message):
    with pytest.raises(ConfigError) as e:
        Predictor(load_config(S.TINY_LAZY, opts))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_lazy_override_may_add_an_argument_the_target_takes(lazy_ckpt):
    cfg = lazy_cfg(lazy_ckpt, "model.roi_heads.box_predictor.smooth_l1_beta=0.5")
    assert cfg.model.roi_heads.box_predictor.smooth_l1_beta == 0.5


def test_yacs_config_errors_are_one_line(tmp_path):
    path = S.tiny_yacs_config(tmp_path)
    with pytest.raises(
        ConfigError, match=r"unknown config key 'MODEL.WEIGTHS'.*closest valid keys: MODEL.WEIGHTS"
    ):
        load_config(path, ["MODEL.WEIGTHS", "x.pth"])
    with pytest.raises(ConfigError, match="checkpoint not found: missing.pth .from MODEL.WEIGHTS"):
        Predictor(load_config(path, ["MODEL.WEIGHTS=missing.pth"]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  ROI_HEADZ: {NUM_CLASSES: 3}\n")
    with pytest.raises(ConfigError, match="Non-existent config key: MODEL.ROI_HEADZ"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="config file not found: nope.py"):
        load_config("nope.py")


def test_corrupt_checkpoint_is_one_line(tmp_path):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=f"cannot load checkpoint {broken}"):
        Predictor(load_config(S.TINY_LAZY, [f"train.init_checkpoint={broken}"]))


def test_checkpoint_of_another_model_is_one_line(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"model": {"head.weight": torch.zeros(3, 3), "head.bias": torch.zeros(3)}}, other)
    with pytest.raises(ConfigError) as e:
        Predictor(load_config(S.TINY_LAZY, [f"train.init_checkpoint={other}"]))
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"checkpoint {other} does not fit this model: ")
    assert "was it trained with another config?" in message


# ---- COCO results JSON ----
def test_coco_json_round_trips_through_loadres(lazy_ckpt, tmp_path):
    predictor = Predictor(lazy_cfg(lazy_ckpt), score_threshold=0.3)
    images = [np.asarray(S.skimage_photo(n, max_side=120)) for n in ("astronaut.png", "coffee.png")]
    outputs = predictor.predict(images)
    writer = CocoResultsWriter(predictor.metadata)
    for i, (image, out) in enumerate(zip(images, outputs)):
        writer.add(i + 1, f"{i}.png", *image.shape[:2], out["instances"])
    results, index = writer.save(str(tmp_path / "preds.json"))
    coco = COCO(index).loadRes(results)
    to_dataset_id = {
        v: k
        for k, v in MetadataCatalog.get("coco_2017_val").thing_dataset_id_to_contiguous_id.items()
    }
    for image_id, out in zip((1, 2), outputs):
        instances = out["instances"]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(instances) > 0
        anns.sort(key=lambda a: -a["score"])
        order = torch.argsort(instances.scores, descending=True, stable=True)
        for ann, k in zip(anns, order.tolist()):
            assert ann["category_id"] == to_dataset_id[int(instances.pred_classes[k])]
            xywh = BoxMode.convert(
                instances.pred_boxes.tensor[k : k + 1], BoxMode.XYXY_ABS, BoxMode.XYWH_ABS
            )
            np.testing.assert_allclose(ann["bbox"], xywh[0].numpy(), rtol=1e-5, atol=1e-3)
            np.testing.assert_array_equal(
                mask_util.decode(ann["segmentation"]), instances.pred_masks[k].numpy()
            )
    with open(index) as f:
        names = {c["id"]: c["name"] for c in json.load(f)["categories"]}
    assert names[1] == "person" and names[90] == "toothbrush" and len(names) == 80


def test_image_ids_follow_numeric_file_names():
    assert assign_image_ids(["a/000000397133.jpg", "b/42.png"]) == [397133, 42]
    assert assign_image_ids(["a/1.jpg", "b/x.png", "c/01.png"]) == [1, 2, 3]
    assert assign_image_ids(["a/1.jpg", "b/01.jpg"]) == [1, 2]  # the same number twice


# ---- reading images ----
def test_read_image_converts_gray_rgba_and_16_bit(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(gray).save(tmp_path / "gray.png")
    out = read_image(str(tmp_path / "gray.png"))
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    assert all(np.array_equal(out[:, :, c], gray) for c in range(3))

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (200, 100, 0)
    rgba[..., 3] = [[255, 0], [128, 64]]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = read_image(str(tmp_path / "rgba.png")).astype(float)
    alpha = rgba[..., 3:] / 255.0
    np.testing.assert_allclose(
        out, rgba[..., :3] * alpha + 255 * (1 - alpha), atol=0.5
    )  # over white

    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000 + 100).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    out = read_image(str(tmp_path / "deep.png"), format="BGR")
    np.testing.assert_allclose(out[:, :, 0], deep / 257.0, atol=0.5)

    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(
        read_image(str(tmp_path / "rgb.png"), format="BGR"), rgb[:, :, ::-1]
    )


def test_read_image_applies_exif_orientation(tmp_path):
    im = Image.fromarray(np.zeros((10, 30, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotated 90 degrees
    im.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(str(tmp_path / "rotated.jpg")).shape == (30, 10, 3)


@pytest.mark.parametrize(
    "content,reason", [(None, "cannot decode"), (b"hello", "not an image file")]
)
def test_bad_image_files_raise_one_line(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content is None:  # a truncated JPEG
        Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "ok.jpg")
        content = (tmp_path / "ok.jpg").read_bytes()[:300]
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as e:
        read_image(str(path))
    assert str(e.value).startswith(f"{path}: {reason}") and "\n" not in str(e.value)


def test_expand_inputs_reads_folders_globs_and_files(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.PNG").write_bytes(b"")
    folder, sub = str(tmp_path), str(tmp_path / "sub")
    assert expand_inputs([folder]) == [f"{folder}/a.jpg", f"{folder}/b.png"]
    assert expand_inputs([f"{folder}/*.png", f"{sub}/c.PNG"]) == [f"{folder}/b.png", f"{sub}/c.PNG"]
    assert expand_inputs([f"{folder}/b.png", folder]) == [f"{folder}/b.png", f"{folder}/a.jpg"]
    assert expand_inputs([f"{folder}/*.gif"]) == [f"{folder}/*.gif"]  # reported when read


# ---- the video pipeline ----
class MeanPredictor:
    """A stand-in model: predicts each frame's mean, so that outputs identify their frame."""

    def __init__(self, fail_at=None):
        self.fail_at = fail_at
        self.threads = set()

    def predict(self, frames):
        self.threads.add(threading.get_ident())
        if self.fail_at is not None and any(int(f.mean()) == self.fail_at for f in frames):
            raise RuntimeError(f"frame {self.fail_at} failed")
        return [{"mean": int(f.mean())} for f in frames]


def frames(n):
    return (np.full((4, 4, 3), i, np.uint8) for i in range(n))


def test_pipeline_keeps_order_and_predicts_in_another_thread():
    got, predictor = [], MeanPredictor()
    count = run_pipeline(
        frames(23), predictor, lambda f, o: got.append((int(f[0, 0, 0]), o["mean"])), 4, 23
    )
    assert count == 23 and got == [(i, i) for i in range(23)]
    assert threading.get_ident() not in predictor.threads


def test_pipeline_stops_when_consumer_says_so_and_reraises_errors():
    seen = []
    assert (
        run_pipeline(frames(50), MeanPredictor(), lambda f, o: seen.append(1) or len(seen) < 5, 3)
        == 5
    )
    with pytest.raises(RuntimeError, match="frame 7 failed"):
        run_pipeline(frames(50), MeanPredictor(fail_at=7), lambda f, o: None, 3)
