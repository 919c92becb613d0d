"""DETR's data pipeline in detectron2 terms: :class:`DetrDatasetMapper`, :class:`DetrResize` and
:class:`RandomSelect`.

Train (official DETR, ``datasets/coco.py``): horizontal flip, then with probability 0.5 either
**A** a resize of the shorter side to one of 480, 512, ..., 800 (longer side <= 1333), or **B**
a resize to one of 400, 500, 600, a random crop of 384-600 pixels a side, then A. Test: shorter
side 800, longer side <= 1333. Boxes only, RGB; crowd boxes dropped, boxes emptied by the crop
removed, images without boxes kept.

:class:`DetrResize` computes the output size exactly as DETR's ``get_size_with_aspect_ratio``
(the long side truncated, a max-size cap rounded), where detectron2's ``ResizeShortestEdge``
rounds half up: a 640x480 image at 800 becomes 1066x800 here as in DETR, 1067x800 with
``ResizeShortestEdge``. Converted official checkpoints thus see the tensors DETR feeds them.
"""

import sys

import numpy as np

import detectron2.data.transforms as T

from .mapper import RobustDatasetMapper

__all__ = [
    "DETR_TRAIN_SIZES",
    "DetrDatasetMapper",
    "DetrResize",
    "RandomSelect",
    "detr_augmentations",
    "detr_output_shape",
]

DETR_TRAIN_SIZES = tuple(range(480, 801, 32))  # 480, 512, ..., 800


def detr_output_shape(height, width, size, max_size=None):
    """(new_h, new_w) of DETR's resize: the shorter side to ``size`` unless the longer one
    would exceed ``max_size`` (then the shorter side to ``round(max_size * short / long)``); the
    other side truncated (DETR's ``get_size_with_aspect_ratio``)."""
    if max_size is not None:
        short, long = float(min(height, width)), float(max(height, width))
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


class DetrResize(T.ResizeShortestEdge):
    """``ResizeShortestEdge`` (same arguments) with DETR's output size
    (:func:`detr_output_shape`). ``max_size=None`` means no cap."""

    def __init__(self, short_edge_length, max_size=None, sample_style="choice", interp=None):
        kwargs = {} if interp is None else {"interp": interp}
        super().__init__(short_edge_length, sys.maxsize, sample_style, **kwargs)
        self.max_size = max_size

    def get_transform(self, image):
        h, w = image.shape[:2]
        if self.is_range:
            size = np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1)
        else:
            size = np.random.choice(self.short_edge_length)
        newh, neww = detr_output_shape(h, w, int(size), self.max_size)
        return T.ResizeTransform(h, w, newh, neww, self.interp)


class RandomSelect(T.Augmentation):
    """Apply ``first`` with probability ``p``, else ``second`` (each an augmentation or a list of
    them), as DETR's ``T.RandomSelect``."""

    def __init__(self, first, second, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomSelect: p={p} is not a probability")
        self.first, self.second = _as_list(first), _as_list(second)
        self.p = p

    def __call__(self, aug_input):
        chosen = self.first if self._rand_range() < self.p else self.second
        return chosen(aug_input)

    def __repr__(self):
        return f"RandomSelect(p={self.p}, first={self.first}, second={self.second})"


def _as_list(augmentations):
    """An augmentation or a sequence of them as one ``AugmentationList``."""
    if isinstance(augmentations, T.Augmentation):
        augmentations = [augmentations]
    return T.AugmentationList(list(augmentations))


def detr_augmentations(is_train, train_sizes=DETR_TRAIN_SIZES, max_size=1333, test_size=800):
    """DETR's augmentations (see the module docstring)."""
    if not is_train:
        return [DetrResize(test_size, max_size)]
    resize = DetrResize(train_sizes, max_size)
    return [
        T.RandomFlip(horizontal=True),
        RandomSelect(
            resize,
            [DetrResize((400, 500, 600)), T.RandomCrop("absolute_range", (384, 600)), resize],
        ),
    ]


class DetrDatasetMapper(RobustDatasetMapper):
    """A :class:`RobustDatasetMapper` for DETR: boxes only, RGB, DETR's augmentations unless
    ``augmentations`` is given. Other arguments as detectron2's ``DatasetMapper``."""

    def __init__(self, is_train, augmentations=None, image_format="RGB", **kwargs):
        if augmentations is None:
            augmentations = detr_augmentations(is_train)
        kwargs.setdefault("use_instance_mask", False)
        super().__init__(
            is_train=is_train, augmentations=augmentations, image_format=image_format, **kwargs
        )
