"""Adapts detectron2 (v0.6 and main) to today's stack (torch 2.x, numpy 2, Pillow >= 10, Python 3.11).

Everything that changes detectron2's behaviour from our side lives in this package, one
concern per module. Each shim says *what* it does, *why*, and *when it can go*. Shims that
stand in for detectron2's compiled ``_C`` ops apply only when ``detectron2._C`` is missing:
with a real compiled detectron2 they step aside.

:func:`apply` runs once, on ``import fpt``; it is idempotent.
"""

import importlib

from . import (
    anchors,
    c_ops,
    checkpoint,
    coco_masks,
    export,
    fast_eval,
    fx_tracing,
    lr_scheduler,
    lvis_api,
    map_dataset,
    norms,
    numpy_aliases,
    pillow,
    pkg_resources_shim,
    tensor_array,
    timm_layers,
    training,
    warnings_,
)

__all__ = ["apply", "HAS_COMPILED_OPS"]

# imported inside warnings_.quiet_imports(), so that their import-time scripting stays quiet
_IMPORTED_EAGERLY = (
    "fvcore.nn",
    "detectron2.data",
    "detectron2.engine",
    "detectron2.evaluation",
    "detectron2.modeling",
    "detectron2.structures",
    "detectron2.utils.analysis",
    "detectron2.utils.visualizer",
    "detectron2.utils.video_visualizer",
)

_APPLIED = False
HAS_COMPILED_OPS = c_ops.has_compiled_ops()


def apply():
    """Install every shim (once). Must run before ``detectron2`` submodules are imported."""
    global _APPLIED
    if _APPLIED:
        return
    _APPLIED = True
    # module-level fixes that must precede any detectron2 import
    pillow.apply()
    tensor_array.apply()
    with warnings_.quiet_imports():
        c_ops.apply()
        export.apply()
        pkg_resources_shim.apply()  # imports detectron2.model_zoo (and so detectron2.modeling)
        # fixes to detectron2 objects (import the detectron2 modules they patch)
        fast_eval.apply()
        checkpoint.apply()
        anchors.apply()
        training.apply()
        map_dataset.apply()
        lr_scheduler.apply()
        numpy_aliases.apply()
        lvis_api.apply()
        timm_layers.apply()
        fx_tracing.apply()
        for module in _IMPORTED_EAGERLY:
            importlib.import_module(module)
    # last: these re-point names in every imported detectron2 module
    norms.apply()
    coco_masks.apply()
