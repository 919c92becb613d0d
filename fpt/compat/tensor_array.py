"""``numpy.array(tensor, ...)`` without numpy 2's ``copy``-keyword DeprecationWarning.

What: give ``torch.Tensor.__array__`` the ``copy`` keyword of numpy 2's array protocol
(``copy=True`` returns a fresh array; ``None``/``False`` behave as before).
Why: torch's ``Tensor.__array__(dtype=None)`` lacks it, so every ``np.array(tensor, dtype=...)``
warns on numpy 2 — detectron2 does that for each predicted mask during COCO evaluation
(evaluation/coco_evaluation.py ``instances_to_coco_json``) and when drawing (utils/visualizer.py),
hundreds of warnings per evaluation.
Scope: process-wide — it patches the ``torch.Tensor`` class, so every ``np.array(tensor)`` in
the process (the user's code, pycocotools, PIL, ...) takes the patched method. It cannot be
narrower: numpy calls ``Tensor.__array__`` itself, wherever a tensor reaches it. It is as narrow as
the protocol allows: the same arrays as before (same dtype, memory shared unless a copy is asked
for), only the keyword is accepted, and it steps aside when torch's method has ``copy``.
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
