"""Decoding videos and cameras: :class:`VideoSource` yields frames as RGB arrays.

Videos and webcams run as a pipeline of three stages that overlap, one module each: decoding
(here), prediction in a thread or in worker processes (:mod:`.workers`, :class:`AsyncPredictor`),
and the caller's thread consuming the results in order (:mod:`.pipeline`, :func:`run_pipeline`).
They were one module; split because each is read on its own (OpenCV capture; processes and their
deaths; threads and their stop flag), and only the workers build predictors from a config.
"""

import cv2

__all__ = ["VideoError", "VideoSource"]


class VideoError(ValueError):
    """A video file or camera that cannot be opened; the message is one line."""


class VideoSource:
    """Frames of a video file or a camera (``int`` index), as ``(H, W, 3)`` uint8 RGB arrays."""

    def __init__(self, source):
        self.name = f"camera {source}" if isinstance(source, int) else str(source)
        self.capture = cv2.VideoCapture(source)
        if not self.capture.isOpened():
            raise VideoError(f"{self.name}: cannot open (not a video, or no such camera)")
        self.width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 else 30.0  # cameras may not report it
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.num_frames = count if count > 0 and not isinstance(source, int) else None

    def __iter__(self):
        while True:
            ok, frame = self.capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self):
        self.capture.release()
