"""Pillow >= 10 removed the resampling constants ``Image.LINEAR``, ``Image.ANTIALIAS``, ...

What: re-add the removed names on ``PIL.Image`` as aliases of ``Image.Resampling`` members.
Why: detectron2 0.6 uses ``Image.LINEAR`` as a default argument
(data/transforms/transform.py:46), so ``import detectron2.data`` fails on Pillow >= 10.
Scope: process-wide (``PIL.Image`` is shared), additive only: names Pillow no longer has.
When it can go: when detectron2 is >= 0.7 (it uses ``Image.BILINEAR``).
"""

from PIL import Image

# removed name -> current member (Pillow 10 release notes)
_REMOVED = {
    "LINEAR": "BILINEAR",
    "ANTIALIAS": "LANCZOS",
    "CUBIC": "BICUBIC",
}


def apply():
    for old, new in _REMOVED.items():
        if not hasattr(Image, old):
            setattr(Image, old, getattr(Image.Resampling, new))
