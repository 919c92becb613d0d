"""COCO mask encoding/decoding without numpy 2's ``__array__`` DeprecationWarning.

What: point detectron2's ``pycocotools.mask`` references (``mask_util``, ``maskUtils``) at
``faster_coco_eval.core.mask``, a maintained fork with the same functions and results
(``encode/decode/merge/frPyObjects/area/toBbox/iou``; tests/test_compat.py checks equality).
Why: pycocotools 2.0.11's ``decode`` returns ``np.array(Masks)`` whose Cython ``__array__``
lacks numpy 2's ``copy`` keyword: a DeprecationWarning for every polygon ground-truth mask
(structures/masks.py:36, ``polygons_to_bitmask``), every RLE annotation
(data/detection_utils.py) and every drawn mask (utils/visualizer.py).
When it can go: when pycocotools' ``Masks.__array__`` accepts ``copy``.
"""

import pycocotools.mask
from faster_coco_eval.core import mask as faster_mask

from ._repoint import repoint


def apply():
    repoint(pycocotools.mask, faster_mask)
