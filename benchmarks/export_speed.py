#!/usr/bin/env python
"""Latency of exported models: eager PyTorch vs TorchScript (traced) vs ONNX Runtime, one image.

Each model is built from its config with random (seeded) weights, exported with
``fpt.export.export_model`` (TorchScript by tracing, and ONNX; each checked against the eager
model), and the three are run on the same preprocessed image through the same detectron2
post-processing (``fpt.export.ExportedModel`` / the eager model's ``forward``): the time is
image tensor in, ``Instances`` (or ``sem_seg``) out, no preprocessing, no drawing.

Time: the median over --iters rounds after --warmup, the three runtimes timed in interleaved
rounds (the order rotates every round) so that load drift on a shared machine hits them alike;
"x eager" is the median of the per-round ratios. ONNX Runtime gets as many intra-op threads as
torch (``torch.get_num_threads()``, --threads).

    python benchmarks/export_speed.py                       # the tiny shapes models, CPU
    python benchmarks/export_speed.py --models mask_rcnn_R_50_FPN detr_R_50 --iters 5
    python benchmarks/export_speed.py --device cuda --iters 50 --warmup 10   # needs
        # onnxruntime-gpu for the ONNX column (else it reads n/a)

Random weights: the R-CNN models return their full 100 detections per image (the tiny ones at
score threshold 0.05 on 3 classes, the R-50 one at threshold 0), so the RoI heads cost what they
cost on a trained model; DETR always decodes every query.
"""

import fpt  # noqa: F401  (must come first: compat layer)

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.model_zoo import get_config_file

from fpt.config import RunConfig, load_config
from fpt.export import ExportError, ExportedModel, export_model
from fpt.predictor import Predictor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IRPE = "model.transformer.enc_rpe=rpe-2.0-product-ctx-1-k"

# name -> (config, overrides, image side): the image is a photo resized to side x side, then
# the config's own test resize applies
MODELS = {
    "mask_rcnn_R_18_FPN_tiny": ("configs/Shapes/mask_rcnn_R_18_FPN_tiny.py", [], 128),
    "vitdet_mask_rcnn_tiny": ("configs/Shapes/vitdet_mask_rcnn_tiny.py", [], 128),
    "fpt_mask_rcnn_tiny": ("configs/Shapes/fpt_mask_rcnn_tiny.py", [], 128),
    "detr_tiny": ("configs/Shapes/detr_tiny.py", [], 128),
    "detr_irpe_tiny": ("configs/Shapes/detr_tiny.py", [IRPE], 128),
    # full-size models at their COCO test resize (short side 800)
    "mask_rcnn_R_50_FPN": (
        "detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
        # random weights: moderate activations and no score threshold, so that the heads see
        # (and return) 100 detections as a trained model does
        [
            "MODEL.ROI_HEADS.NUM_CLASSES",
            "3",
            "MODEL.PIXEL_STD",
            "[57.375,57.12,58.395]",
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            "0.0",
        ],
        640,
    ),
    "detr_R_50": ("configs/COCO/DETR/detr_r50_150ep.py", ["model.num_classes=3"], 640),
}
TINY = [name for name in MODELS if name.endswith("_tiny")]
RUNTIMES = ("eager", "TorchScript", "ONNX Runtime")


def photo(side):
    """A real photo (scikit-image's astronaut) resized to side x side, RGB uint8."""
    import cv2
    from PIL import Image

    import skimage

    path = os.path.join(os.path.dirname(skimage.__file__), "data", "astronaut.png")
    image = np.asarray(Image.open(path).convert("RGB"))
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def build(name, folder, device):
    """The config of a benchmark model, with a random (seeded) checkpoint."""
    path, opts, _ = MODELS[name]
    if path.startswith("detectron2://"):
        path = get_config_file(path[len("detectron2://") :])
    else:
        path = os.path.join(REPO, path)
    cfg = load_config(path, opts)
    run = RunConfig(cfg)
    torch.manual_seed(0)
    model = run.build_model(device)
    DetectionCheckpointer(model, save_dir=folder).save(name)
    run.set_weights(os.path.join(folder, name + ".pth"))
    return cfg


def timed(fn, device):
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_model(name, device, iters, warmup, folder):
    cfg = build(name, folder, device)
    image = photo(MODELS[name][2])
    runners, notes = {}, []
    eager = Predictor(cfg, device=device, image_format="RGB")
    runners["eager"] = eager.model
    for fmt, runtime in (("torchscript", "TorchScript"), ("onnx", "ONNX Runtime")):
        out = os.path.join(folder, f"{name}_{fmt}")
        try:
            result = export_model(cfg, out, fmt, "tracing", sample_image=image, device=device)
            runners[runtime] = ExportedModel(out, device, onnx_threads=torch.get_num_threads())
            notes.append(f"{fmt} export {result['seconds']:.0f} s")
        except ExportError as e:
            notes.append(f"{runtime}: {e}")
    inputs = eager.preprocess(image)
    batch = [inputs]
    times = {r: [] for r in runners}
    order = list(runners)
    with torch.no_grad():
        for i in range(warmup + iters):
            for runtime in order[i % len(order) :] + order[: i % len(order)]:
                seconds = timed(lambda run=runners[runtime]: run(batch), device)
                if i >= warmup:
                    times[runtime].append(seconds)
    median = {r: statistics.median(t) for r, t in times.items()}
    ratios = {r: statistics.median(t / e for t, e in zip(times[r], times["eager"])) for r in times}
    size = tuple(inputs["image"].shape[-2:])
    return median, ratios, size, notes


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=TINY, choices=list(MODELS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch and ONNX Runtime threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"median of {args.iters} after {args.warmup} warm-up, ms per image"
    )
    header = "| model | input | " + " | ".join(RUNTIMES) + " |"
    lines = [header, "|" + " --- |" * (len(RUNTIMES) + 2)]
    print(lines[0])
    print(lines[1])
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            median, ratios, size, notes = bench_model(
                name, args.device, args.iters, args.warmup, folder
            )
            cells = []
            for runtime in RUNTIMES:
                if runtime not in median:
                    cells.append("n/a")
                elif runtime == "eager":
                    cells.append(f"{median[runtime] * 1e3:.1f}")
                else:
                    cells.append(f"{median[runtime] * 1e3:.1f} ({ratios[runtime]:.2f}x)")
            line = f"| {name} | {size[0]}x{size[1]} | " + " | ".join(cells) + " |"
            print(line, flush=True)
            for note in notes:
                print(f"    {name}: {note}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
