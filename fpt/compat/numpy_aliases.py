"""numpy 2 removed the deprecated aliases ``np.int``, ``np.float``, ``np.str``, ``np.object``.

What: re-add the ones that are missing, as the builtins they always aliased.
Why: detectron2 0.6 uses them (evaluation/sem_seg_evaluation.py:90,130-135, structures/masks.py,
data/datasets/pascal_voc.py:35, utils/visualizer.py, ...). In data/build.py:171 the use sits
inside a ``try/except``, so without the alias the class histogram and the category-id check are
silently skipped. (``np.bool`` exists again in numpy 2, as ``np.bool_``.)
When it can go: when detectron2 is >= 0.7.
"""
import builtins

import numpy as np

_ALIASES = ("int", "float", "complex", "object", "str")


def apply():
    for name in _ALIASES:
        if name not in np.__dict__:  # getattr would warn or raise for expired aliases
            setattr(np, name, getattr(builtins, name))
