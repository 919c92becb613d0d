"""What ``demo/demo.py`` does, as functions: predict images or a video, draw the predictions,
write them (image folder, video file, window) and optionally as COCO-format JSON.

Bad images are reported in one line each and skipped; the functions return how many inputs
failed, so that the caller's exit code can say so.
"""

import collections
import itertools
import logging
import os
import sys

import cv2
from tqdm import tqdm

from ..data.images import ImageReadError, read_image
from .coco_json import CocoResultsWriter, assign_image_ids
from .pipeline import run_pipeline
from .video import VideoError, VideoSource
from .visualize import Drawer

__all__ = ["ImageSink", "run_on_images", "run_on_video", "display_available"]

logger = logging.getLogger(__name__)

WINDOW = "fpt demo"
_ESC = 27
_WRITABLE = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def display_available():
    """Whether OpenCV can open a window here (a GUI build and a display)."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:  # opencv-python-headless
        return False
    return True


def report(message):
    """Print one line about a skipped input on stderr (above the progress bar)."""
    tqdm.write(message, file=sys.stderr)


class ImageSink:
    """Where drawn images go: a folder (or a single file), or a window when ``output`` is None."""

    def __init__(self, output, num_inputs):
        self.output = output
        self.single_file = (
            output is not None
            and num_inputs == 1
            and not os.path.isdir(output)
            and output.lower().endswith(_WRITABLE)
        )
        if output is not None:
            folder = os.path.dirname(os.path.abspath(output)) if self.single_file else output
            os.makedirs(folder, exist_ok=True)
        self.used = set()

    def path_for(self, input_path):
        """The output file for an input: same name in the folder (``.png`` if OpenCV cannot
        write the input's format), made unique when two inputs share a name."""
        if self.single_file:
            return self.output
        stem, ext = os.path.splitext(os.path.basename(input_path))
        ext = ext if ext.lower() in _WRITABLE else ".png"
        name = stem + ext
        for i in itertools.count(1):
            if name not in self.used:
                break
            name = f"{stem}_{i}{ext}"
        self.used.add(name)
        return os.path.join(self.output, name)

    def write(self, input_path, drawing_rgb):
        """Write (or show) a drawing; returns False when the user asked to stop (Esc)."""
        bgr = cv2.cvtColor(drawing_rgb, cv2.COLOR_RGB2BGR)
        if self.output is None:
            cv2.imshow(WINDOW, bgr)
            return cv2.waitKey(0) != _ESC
        path = self.path_for(input_path)
        if not cv2.imwrite(path, bgr):
            raise OSError(f"cannot write {path}")
        return True


def run_on_images(predictor, paths, output=None, json_output=None, draw=True):
    """
    Predict image files, ``predictor.batch_size`` at a time, reading the next images and
    predicting while the previous ones are drawn (:func:`run_pipeline`).

    Args:
        predictor: a ``Predictor`` or ``AsyncPredictor`` with ``image_format="RGB"``.
        paths (list[str]): image files.
        output (str or None): folder (or file, for one input) for the drawings; None: a window.
        json_output (str or None): write COCO-format results there (see :mod:`.coco_json`).
        draw (bool): draw the predictions (False: JSON only).

    Returns:
        int: the number of images that could not be read (reported on stderr and skipped).
    """
    sink = ImageSink(output, len(paths)) if draw else None
    drawer = Drawer(predictor.metadata)
    coco = CocoResultsWriter(predictor.metadata) if json_output else None
    image_ids = dict(zip(paths, assign_image_ids(paths)))
    pending = collections.deque()  # paths of the images read, in order
    failed = []

    def images():
        for path in paths:
            try:
                image = read_image(path, format="RGB")
            except ImageReadError as e:
                report(f"skipped {e}")
                failed.append(path)
                continue
            pending.append(path)
            yield image

    def consume(image, outputs):
        path = pending.popleft()
        if coco is not None and "instances" in outputs:
            height, width = image.shape[:2]
            coco.add(image_ids[path], os.path.basename(path), height, width, outputs["instances"])
        return sink is None or sink.write(path, drawer(image, outputs))

    run_pipeline(images(), predictor, consume, predictor.batch_size, len(paths), "images", "image")
    if coco is not None:
        for path in coco.save(json_output):
            logger.info("wrote %s", path)
    return len(failed)


def run_on_video(predictor, source, output=None, json_output=None, max_frames=None):
    """
    Predict a video file or camera, ``predictor.batch_size`` frames at a time, and write the
    drawn frames as a video with the input's size and frame rate (MPEG-4, ``mp4v``), or show them
    in a window.

    Args:
        predictor: a ``Predictor`` (``image_format="RGB"``) or an ``AsyncPredictor``.
        source (str or int): a video file or a camera index.
        output (str or None): a video file, or a folder (the file is then named after the input,
            ``.mp4``); None: a window.
        json_output (str or None): COCO-format results, one image id per frame (1, 2, ...).
        max_frames (int or None): stop after that many frames.

    Returns:
        int: the number of frames written (or shown).
    """
    video = VideoSource(source)
    drawer = Drawer(predictor.metadata, video=True)
    coco = CocoResultsWriter(predictor.metadata) if json_output else None
    writer = None
    if output is not None:
        path = output
        if os.path.isdir(output) or not os.path.splitext(output)[1]:  # a folder
            stem = (
                "webcam"
                if isinstance(source, int)
                else os.path.splitext(os.path.basename(source))[0]
            )
            path = os.path.join(output, stem + ".mp4")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
        writer = cv2.VideoWriter(path, fourcc, video.fps, (video.width, video.height))
        if not writer.isOpened():
            video.close()
            raise VideoError(f"{path}: cannot write a video there (use a .mp4 file name)")
    frame_ids = itertools.count(1)

    def consume(frame, outputs):
        frame_id = next(frame_ids)
        if coco is not None and "instances" in outputs:
            name = f"{video.name}#{frame_id}"
            coco.add(frame_id, name, video.height, video.width, outputs["instances"])
        drawing = cv2.cvtColor(drawer(frame, outputs), cv2.COLOR_RGB2BGR)
        if writer is not None:
            writer.write(drawing)
            return True
        cv2.imshow(WINDOW, drawing)
        return cv2.waitKey(1) != _ESC

    total = video.num_frames
    if max_frames is not None:
        total = min(total, max_frames) if total is not None else max_frames
    frames = itertools.islice(video, max_frames)
    try:
        count = run_pipeline(
            frames, predictor, consume, predictor.batch_size, total, os.path.basename(video.name)
        )
    finally:
        video.close()
        if writer is not None:
            writer.release()
    if coco is not None:
        coco.save(json_output)
    return count
