"""Running trained models: image files, folders, videos and cameras; drawings and COCO JSON.

The model side is :class:`fpt.predictor.Predictor`; this package is the input/output around it,
used by ``demo/demo.py``.
"""

from .coco_json import CocoResultsWriter, assign_image_ids
from ..data.images import ImageReadError, read_image
from .images import expand_inputs
from .pipeline import run_pipeline
from .runner import display_available, run_on_images, run_on_video
from .video import VideoError, VideoSource
from .visualize import Drawer
from .workers import AsyncPredictor, PredictorWorkerError, default_devices

__all__ = [
    "AsyncPredictor",
    "CocoResultsWriter",
    "Drawer",
    "ImageReadError",
    "PredictorWorkerError",
    "VideoError",
    "VideoSource",
    "assign_image_ids",
    "default_devices",
    "display_available",
    "expand_inputs",
    "read_image",
    "run_on_images",
    "run_on_video",
    "run_pipeline",
]
