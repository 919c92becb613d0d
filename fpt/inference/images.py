"""The image files people point a demo at: files, folders and globs (reading them is
:func:`fpt.data.read_image`)."""

import glob
import os

__all__ = ["expand_inputs", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
    ".ppm",
    ".pgm",
)


def expand_inputs(patterns):
    """
    Expand files, folders (their images, sorted, not recursive) and glob patterns to a list of
    paths, in the order given, each path once. A pattern that matches nothing is kept as is, so
    that reading it reports the problem in one line.
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
    return list(dict.fromkeys(paths))
