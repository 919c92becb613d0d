"""``numpy.array(tensor, ...)`` without numpy 2's ``copy``-keyword DeprecationWarning.

What: give ``torch.Tensor.__array__`` the ``copy`` keyword of numpy 2's array protocol
(``copy=True`` returns a fresh array; ``None``/``False`` behave as before).
Why: torch's ``Tensor.__array__(dtype=None)`` lacks it, so every ``np.array(tensor, dtype=...)``
warns on numpy 2 — detectron2 does that for each predicted mask during COCO evaluation
(evaluation/coco_evaluation.py ``instances_to_coco_json``) and when drawing (utils/visualizer.py),
hundreds of warnings per evaluation.
When it can go: when torch's ``Tensor.__array__`` accepts ``copy`` (then this steps aside).
"""
import inspect

import torch


def apply():
    original = torch.Tensor.__array__
    if "copy" in inspect.signature(original).parameters:
        return

    def __array__(self, dtype=None, copy=None):
        array = original(self, dtype)
        return array.copy() if copy else array

    __array__.__doc__ = original.__doc__
    torch.Tensor.__array__ = __array__
