"""Reading the images people point a demo at: any file Pillow opens, made 3-channel 8-bit.

Grayscale, palette, RGBA / LA (composited over white), CMYK and 16-bit / 32-bit / float images are
converted; EXIF orientation is applied. Unreadable or truncated files raise
:class:`ImageReadError` with a one-line message naming the file.
"""
import glob
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageReadError", "read_image", "to_uint8_rgb", "expand_inputs", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


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
        raise ImageReadError(f"{path}: cannot decode ({str(e).strip() or type(e).__name__})") from None
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


def expand_inputs(patterns):
    """
    Expand files, folders (their images, sorted, not recursive) and glob patterns to a list of
    paths, in the order given. A pattern that matches nothing is kept as is, so that reading it
    reports the problem in one line.
    """
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            names = sorted(os.listdir(pattern))
            paths += [
                os.path.join(pattern, n)
                for n in names
                if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(pattern, n))
            ]
        elif glob.has_magic(pattern):
            matches = sorted(glob.glob(os.path.expanduser(pattern)))
            paths += [m for m in matches if os.path.isfile(m)] or [pattern]
        else:
            paths.append(os.path.expanduser(pattern))
    return paths
