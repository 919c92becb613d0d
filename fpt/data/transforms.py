"""Large-scale jitter that resizes only the part of the image it keeps.

ViTDet's LSJ is detectron2's ``ResizeScale`` (scale 0.1-2.0 of 1024) followed by ``FixedSizeCrop``
(1024x1024). Applied one after the other, every scale above 1 resizes the whole image to up to
2048 pixels a side and then throws most of it away: on COCO-sized photos that resize is about half
of the mapper's time. :class:`ResizeScaleCrop` draws the same random numbers in the same order as
the two augmentations (same scale, same crop offset, same padding) and gives one
:class:`ResizeCropTransform`, which asks Pillow to resample only the crop's region of the source
(``Image.resize(box=...)``). Pillow places every output pixel at the same source position either
way, so the image equals the resize-then-crop one (up to a rounding of a few pixel values by one,
from the region's floating-point offsets); boxes, polygons and masks go through detectron2's own
resize and crop transforms unchanged.
"""

import numpy as np
from PIL import Image

from detectron2.data.transforms import (
    Augmentation,
    CropTransform,
    FixedSizeCrop,
    ResizeScale,
    ResizeTransform,
    Transform,
    TransformList,
)

__all__ = ["ResizeCropTransform", "ResizeScaleCrop"]


class ResizeCropTransform(Transform):
    """A ``ResizeTransform`` followed by a ``CropTransform`` of the resized image, with the image
    resampled only inside the crop (8-bit images; other images, coordinates, polygons and
    segmentation masks are transformed by the two transforms in turn)."""

    def __init__(self, resize: ResizeTransform, crop: CropTransform):
        """
        Args:
            resize: ``(h, w) -> (new_h, new_w)``.
            crop: a crop ``(x0, y0, w, h)`` of the resized image (it may reach past its border:
                the crop then stops there, as ``CropTransform`` does).
        """
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        r, c = self.resize, self.crop
        if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
            return c.apply_image(r.apply_image(img))
        assert img.shape[:2] == (r.h, r.w), (img.shape, r.h, r.w)
        x1, y1 = min(c.x0 + c.w, r.new_w), min(c.y0 + c.h, r.new_h)
        sx, sy = r.w / r.new_w, r.h / r.new_h  # source pixels per output pixel
        box = (c.x0 * sx, c.y0 * sy, x1 * sx, y1 * sy)
        out = Image.fromarray(img).resize((x1 - c.x0, y1 - c.y0), r.interp, box=box)
        return np.asarray(out)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return self.crop.apply_coords(self.resize.apply_coords(coords))

    def apply_polygons(self, polygons: list) -> list:
        return self.crop.apply_polygons(self.resize.apply_polygons(polygons))

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.crop.apply_segmentation(self.resize.apply_segmentation(segmentation))

    def inverse(self) -> Transform:
        return TransformList([self.crop.inverse(), self.resize.inverse()])


class ResizeScaleCrop(Augmentation):
    """
    ``ResizeScale(min_scale, max_scale, target_height, target_width, interp)`` then
    ``FixedSizeCrop(crop_size, pad, pad_value)`` (``crop_size`` defaults to the target size), as
    one augmentation: the same random draws and the same output as the two in a row, faster
    (see the module's docstring).
    """

    def __init__(
        self,
        min_scale: float,
        max_scale: float,
        target_height: int,
        target_width: int,
        crop_size=None,
        pad: bool = True,
        pad_value: float = 128.0,
        interp: int = Image.BILINEAR,
    ):
        super().__init__()
        crop_size = tuple(crop_size) if crop_size is not None else (target_height, target_width)
        self._init(locals())
        self.resize = ResizeScale(min_scale, max_scale, target_height, target_width, interp)
        self.crop = FixedSizeCrop(crop_size, pad=pad, pad_value=pad_value)

    def get_transform(self, image: np.ndarray) -> TransformList:
        resize = self.resize.get_transform(image)
        # FixedSizeCrop reads only the resized image's shape: a zero-byte stand-in of that shape
        resized = np.broadcast_to(
            np.zeros((), image.dtype), (resize.new_h, resize.new_w) + image.shape[2:]
        )
        crop, *pad = self.crop.get_transform(resized).transforms
        return TransformList([ResizeCropTransform(resize, crop)] + pad)
