"""Drawing model outputs with detectron2's ``Visualizer`` (images) / ``VideoVisualizer`` (videos,
which keeps an object's color from frame to frame)."""

from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = ["Drawer"]


class Drawer:
    """Draws ``instances``, ``sem_seg`` or ``panoptic_seg`` outputs on RGB images."""

    def __init__(self, metadata, video=False, instance_mode=ColorMode.IMAGE, scale=1.0):
        """
        Args:
            metadata: class names and colors (``MetadataCatalog`` entry).
            video (bool): draw a sequence of frames: colors follow tracked instances.
            scale (float): size of the drawing relative to the image (images only).
        """
        self.metadata = metadata
        self.instance_mode = instance_mode
        self.scale = scale
        self.video_visualizer = VideoVisualizer(metadata, instance_mode) if video else None

    def __call__(self, image, predictions):
        """
        Args:
            image (np.ndarray): ``(H, W, 3)`` uint8 RGB.
            predictions (dict): a :class:`fpt.predictor.Predictor` output for that image (CPU).

        Returns:
            np.ndarray: ``(H * scale, W * scale, 3)`` uint8 RGB drawing.
        """
        video = self.video_visualizer
        if video is None:
            visualizer = Visualizer(
                image, self.metadata, scale=self.scale, instance_mode=self.instance_mode
            )
        if "panoptic_seg" in predictions:
            panoptic_seg, segments_info = predictions["panoptic_seg"]
            if video is not None:
                return video.draw_panoptic_seg_predictions(
                    image, panoptic_seg, segments_info
                ).get_image()
            return visualizer.draw_panoptic_seg(panoptic_seg, segments_info).get_image()
        if "sem_seg" in predictions and "instances" not in predictions:
            sem_seg = predictions["sem_seg"].argmax(dim=0)
            if video is not None:
                return video.draw_sem_seg(image, sem_seg).get_image()
            return visualizer.draw_sem_seg(sem_seg).get_image()
        instances = predictions["instances"]
        if video is not None:
            return video.draw_instance_predictions(image, instances).get_image()
        return visualizer.draw_instance_predictions(instances).get_image()
