"""``detectron2.export`` without Caffe2 (removed from PyTorch 2).

What: where ``import detectron2.export`` fails for want of Caffe2 (0.6; found by trying it),
pre-register ``detectron2.export`` as a package whose import skips ``api.py`` (which does
``from caffe2.proto import caffe2_pb2``) but keeps everything that works on torch 2:
``TracingAdapter`` (flatten.py), ``scripting_with_instances`` and ``dump_torchscript_IR``
(torchscript.py). The Caffe2 names (``Caffe2Tracer``, ``export_caffe2_model``, ...) raise one
clear error when used.
Why: ``detectron2.utils.analysis`` (``FlopCountAnalysis``, ``parameter_count_table`` helpers)
imports ``detectron2.export.TracingAdapter``, so FLOP counting failed on import.
Where it imports on its own (detectron2 main: Caffe2 optional), it is left as it is.
When it can go: when detectron2 is >= 0.7 (its export no longer imports caffe2 eagerly).
"""

import importlib
import importlib.util
import os
import sys
import types

_CAFFE2_NAMES = {
    "Caffe2Tracer",
    "Caffe2Model",
    "export_caffe2_model",
    "export_onnx_model",
    "add_export_config",
    "api",
    "caffe2_export",
    "caffe2_inference",
    "caffe2_modeling",
    "caffe2_patch",
    "c10",
    "shared",
}


def _getattr(name):
    if name in _CAFFE2_NAMES:
        raise ImportError(
            f"detectron2.export.{name} needs Caffe2, which PyTorch 2 no longer ships; "
            "export with TracingAdapter + torch.jit.trace / torch.onnx instead."
        )
    raise AttributeError(f"module 'detectron2.export' has no attribute {name!r}")


def _imports_on_its_own():
    """Import ``detectron2.export``; on a Caffe2 import error, forget the partial import."""
    try:
        importlib.import_module("detectron2.export")
        return True
    except ImportError as e:
        if not (e.name or "").startswith("caffe2"):
            raise
    for name in [n for n in sys.modules if n.startswith("detectron2.export")]:
        del sys.modules[name]
    return False


def apply():
    if "detectron2.export" in sys.modules or _imports_on_its_own():
        return
    spec = importlib.util.find_spec("detectron2")
    pkg = types.ModuleType("detectron2.export", __doc__)
    pkg.__path__ = [os.path.join(os.path.dirname(spec.origin), "export")]
    pkg.__package__ = "detectron2.export"
    pkg.__getattr__ = _getattr
    sys.modules["detectron2.export"] = pkg
    flatten = importlib.import_module("detectron2.export.flatten")
    torchscript = importlib.import_module("detectron2.export.torchscript")
    pkg.TracingAdapter = flatten.TracingAdapter
    pkg.scripting_with_instances = torchscript.scripting_with_instances
    pkg.dump_torchscript_IR = torchscript.dump_torchscript_IR
    pkg.__all__ = ["TracingAdapter", "scripting_with_instances", "dump_torchscript_IR"]
    import detectron2

    detectron2.export = pkg
