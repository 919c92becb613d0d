"""Reading image files: any file Pillow opens, made 3-channel 8-bit.

Grayscale, palette, RGBA / LA (composited over white), CMYK and 16-bit / 32-bit / float images are
converted; EXIF orientation is applied. Unreadable or truncated files raise
:class:`ImageReadError` with a one-line message naming the file (the dataset mapper raises it too).
"""

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..utils.text import first_line

__all__ = ["ImageReadError", "read_image", "to_uint8_rgb"]


class ImageReadError(ValueError):
    """An image file that cannot be used; the message is one line naming the file."""


def read_image(path, format="RGB"):
    """
    Read an image file as a ``(H, W, 3)`` uint8 array in ``format`` ("RGB" or "BGR").

    Raises:
        ImageReadError: missing, unreadable, truncated or unsupported files.
    """
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im.load()
            rgb = to_uint8_rgb(im)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (or an unsupported format)") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt data, odd modes
        raise ImageReadError(f"{path}: cannot decode ({first_line(e)})") from None
    if format == "BGR":
        return np.ascontiguousarray(rgb[:, :, ::-1])
    if format != "RGB":
        raise ValueError(f"format must be 'RGB' or 'BGR', got {format!r}")
    return rgb


def to_uint8_rgb(im):
    """Convert a PIL image of any mode to a ``(H, W, 3)`` uint8 RGB array."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return np.repeat(_to_uint8(np.asarray(im))[:, :, None], 3, axis=2)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[:, :, 3:] / 255.0
        rgb = rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)  # over a white background
        return np.round(rgb).astype(np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _to_uint8(x):
    """Scale a single-channel 16-bit, 32-bit integer or float image to uint8."""
    if x.dtype == np.uint16 or (x.dtype.kind in "iu" and x.max(initial=0) > 255):
        top = 65535.0 if x.max(initial=0) <= 65535 else float(x.max())
        return np.round(x.astype(np.float64) * (255.0 / top)).astype(np.uint8)
    if x.dtype.kind == "f":
        x = np.nan_to_num(x.astype(np.float64))
        scale = 255.0 if x.max(initial=0) <= 1.0 else 1.0  # [0, 1] floats or [0, 255] floats
        return np.round(np.clip(x * scale, 0, 255)).astype(np.uint8)
    return np.clip(x, 0, 255).astype(np.uint8)
