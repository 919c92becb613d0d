"""Run a trained model (any LazyConfig or yacs config) on images, folders, a video or a webcam.

    python demo/demo.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_tiny.py \\
        --input photos/ "more/*.jpg" --output drawn/ --json-output drawn/predictions.json \\
        --opts train.init_checkpoint=output/shapes_mask_rcnn_R_18_FPN_tiny/model_final.pth

Exit code: 0 when every input was processed, 1 when some image could not be read (each one
reported in one line and skipped), 2 for a bad config, checkpoint, video or argument, or a
predictor worker process (``--num-workers``) that failed or died.
"""

import argparse
import logging
import os
import sys

# idle OpenMP threads sleep instead of spinning: prediction and drawing take turns on the CPU
# (on a busy 2-core machine, spinning made CPU prediction up to 10x slower)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import fpt  # noqa: E402,F401  (first of ours: adapts detectron2 to this stack)
from detectron2.utils.logger import setup_logger  # noqa: E402
from fpt.compat.checkpoint import allow_unsafe_load  # noqa: E402
from fpt.config import ConfigError, load_config  # noqa: E402
from fpt.inference import (  # noqa: E402
    AsyncPredictor,
    ImageReadError,
    PredictorWorkerError,
    VideoError,
    default_devices,
    display_available,
    expand_inputs,
    run_on_images,
    run_on_video,
)
from fpt.predictor import Predictor  # noqa: E402


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--config-file", metavar="FILE", help="LazyConfig .py or yacs .yaml")
    model.add_argument(
        "--exported",
        metavar="PATH",
        help="a model exported by tools/export_model.py (its folder, model.ts or model.onnx)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="PATH", help="image files, folders or globs")
    source.add_argument("--video-input", metavar="FILE", help="a video file")
    source.add_argument("--webcam", action="store_true", help="the first camera")
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="folder for drawn images (a file for one image), or the output video file/folder; "
        "default: show in a window",
    )
    parser.add_argument(
        "--json-output", metavar="FILE", help="write predictions as COCO results JSON"
    )
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.5, help="minimum score to keep"
    )
    parser.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help="load a checkpoint holding arbitrary Python objects (only a file you trust)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=2, help="images or frames per forward pass"
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="predict in this many worker processes (one per GPU in turn); 0: in this process",
    )
    parser.add_argument("--max-frames", type=int, help="video: stop after this many frames")
    parser.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation with the config's test.tta (TEST.AUG) sizes and flip "
        "(same as the override test.tta.enabled=True / TEST.AUG.ENABLED True)",
    )
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides: key=value (LazyConfig, e.g. train.init_checkpoint=model.pth) "
        "or KEY VALUE pairs (yacs, e.g. MODEL.WEIGHTS model.pth)",
    )
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    logger = logging.getLogger("fpt")
    predictor = None
    try:
        paths = check_inputs(args)
        if args.unsafe_load:
            allow_unsafe_load()
        if args.exported:
            predictor = load_exported_predictor(args)
        else:
            predictor = build_predictor(args, load_config(args.config_file, args.opts))
        if paths is None:
            source = 0 if args.webcam else args.video_input
            count = run_on_video(predictor, source, args.output, args.json_output, args.max_frames)
            logger.info("%d frames done", count)
            return 0
        draw = args.output is not None or args.json_output is None
        failed = run_on_images(
            predictor, paths, args.output if draw else None, args.json_output, draw
        )
        logger.info("%d of %d images done, %d skipped", len(paths) - failed, len(paths), failed)
        return 1 if failed else 0
    except (ConfigError, VideoError, ImageReadError, PredictorWorkerError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if isinstance(predictor, AsyncPredictor):
            predictor.close()


def check_inputs(args):
    """The image paths (None for a video or webcam); fails early on what cannot work."""
    paths = None
    if args.input is not None:
        paths = expand_inputs(args.input)
        if not paths:
            raise ImageReadError(f"no images found in {' '.join(args.input)}")
    shows = args.output is None and (paths is None or args.json_output is None)
    if shows and not display_available():
        raise ConfigError(
            f"no --output given and no display to show the {'images' if paths else 'video'} on"
        )
    return paths


def build_predictor(args, cfg):
    kwargs = dict(
        batch_size=args.batch_size,
        score_threshold=args.confidence_threshold,
        image_format="RGB",
        tta=True if args.tta else None,
    )
    if args.num_workers > 0:
        devices = (
            [args.device] * args.num_workers if args.device else default_devices(args.num_workers)
        )
        return AsyncPredictor(cfg, devices, **kwargs)
    return Predictor(cfg, device=args.device, **kwargs)


def load_exported_predictor(args):
    """``--exported``: the exported model, in this process (see ``fpt.export.load_exported``)."""
    from fpt.export import load_exported

    if args.opts or args.num_workers > 0:
        raise ConfigError("--exported takes no --opts or --num-workers (export.json has the rest)")
    if args.tta:
        raise ConfigError("--exported takes no --tta: test-time augmentation runs a --config-file")
    return load_exported(
        args.exported,
        device=args.device,
        batch_size=args.batch_size,
        score_threshold=args.confidence_threshold,
        image_format="RGB",
    )


if __name__ == "__main__":
    for name in ("fvcore", "detectron2", "fpt"):
        setup_logger(name=name)
    sys.exit(main())
