"""ONNX export through ``torch.onnx.export``'s TorchScript-based (tracing) exporter, and the ONNX
Runtime session that runs the result. ``onnx`` and ``onnxruntime`` are imported here only.

Why the TorchScript-based exporter (``dynamo=False``): the ``torch.export``-based one needs a
graph without data-dependent Python, and detectron2's R-CNN inference (NMS, per-level box
assignment, top-k of a data-dependent count) and DETR's padding check are such Python; the
tracing exporter records one run, as ``torch.jit.trace`` does, and the result is checked at a
second image size before it is kept (see :mod:`fpt.export.exporter`).

Two fixes at export time, no model change (the exporter's own symbolics, replaced while
exporting): its ``aten::unflatten`` computes the new shape with a data-dependent ``Slice`` that
ONNX shape inference cannot follow; the exporter then falls back to the traced (sample) sizes,
and later ``Shape``-derived values (e.g. a ``new_ones``) are folded into constants of the
sample's size, so the graph fails at any other size (FPT's Mixture-of-Softmaxes attention).
:func:`_unflatten` writes the same reshape with static slice bounds (``Shape(start, end)``),
which shape inference follows. And the exporter writes a ``split`` into one chunk of a dimension
of unknown size as a ``Split`` of the split size, which fails on a smaller dimension (FPT's local
grounding splits 4 queries into chunks of 1024); :func:`_split` writes the identity.
"""

import contextlib
import warnings

import torch

from .families import ExportError

__all__ = ["OPSET", "export_onnx", "onnx_session", "torch_deprecations"]

OPSET = 17

# torch 2.14 deprecates the TorchScript APIs (torch.jit.trace/script/save/load) and the
# TorchScript-based ONNX exporter in favour of torch.export, which cannot capture detectron2's
# data-dependent inference; the export path uses them on purpose and says so in the README.
_DEPRECATIONS = (
    (FutureWarning, r"`torch\.jit\.\w+` is deprecated"),  # torch >= 2.14
    (DeprecationWarning, r"`torch\.jit\.\w+` is deprecated"),  # torch 2.10-2.13
    (DeprecationWarning, r"You are using the legacy TorchScript-based ONNX export"),
    (DeprecationWarning, r"The feature will be removed\. Please remove usage of this function"),
)
# the exporter's notes: a caution for every advanced indexing (aten::index), whether or not
# indices can be negative (ours are not: class and level indices, gathered positions), and that
# a strided slice is left unfolded (no effect on the graph's values); every export is checked
# against the eager model
_ONNX_NOTES = (
    (UserWarning, r"Exporting aten::index operator of advanced indexing"),
    (UserWarning, r"Constant folding - Only steps=1 can be constant folded"),
)


@contextlib.contextmanager
def torch_deprecations(tracer_warnings=False):
    """Silence torch's deprecation notices of the TorchScript / legacy ONNX export APIs (only
    those), and, with ``tracer_warnings`` (while exporting), ``TracerWarning``s (the asserts and
    shape checks that tracing constant-folds) and the ONNX exporter's advanced-indexing caution:
    every export is checked against the eager model at a second image size instead."""
    with warnings.catch_warnings():
        for category, message in _DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, category=category)
        if tracer_warnings:
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            for category, message in _ONNX_NOTES:
                warnings.filterwarnings("ignore", message=message, category=category)
        yield


def _unflatten(g, input, dim, unflattened_size):
    """``aten::unflatten`` as Reshape(input, Concat(Shape[:dim], sizes, Shape[dim + 1:]))."""
    from torch.onnx._internal.torchscript_exporter import symbolic_helper, symbolic_opset13

    rank = symbolic_helper._get_tensor_rank(input)
    d = symbolic_helper._maybe_get_const(dim, "i")
    if rank is None or not isinstance(d, int):
        return symbolic_opset13.unflatten(g, input, dim, unflattened_size)
    d %= rank
    parts = [unflattened_size]
    if d > 0:
        parts.insert(0, g.op("Shape", input, start_i=0, end_i=d))
    if d + 1 < rank:
        parts.append(g.op("Shape", input, start_i=d + 1))
    return symbolic_helper._reshape_helper(g, input, g.op("Concat", *parts, axis_i=0))


def _split(g, self, split_size_or_sizes, dim, _outputs=None):
    """``aten::split`` that gave one chunk while tracing: the whole tensor. The exporter would
    write a static ``Split`` of the split size, which fails wherever the tensor is smaller (FPT's
    chunked attention splits ``r x r`` queries into chunks of 1024), or drops rows where it is
    larger; chunks are processed alike and concatenated, so one chunk of everything is the
    same computation."""
    from torch.onnx._internal.torchscript_exporter import symbolic_opset13

    if _outputs == 1:
        return g.op("Identity", self)
    return symbolic_opset13.split(g, self, split_size_or_sizes, dim, _outputs)


_SYMBOLICS = {"aten::unflatten": _unflatten, "aten::split": _split}


@contextlib.contextmanager
def _symbolics():
    for name, fn in _SYMBOLICS.items():
        torch.onnx.register_custom_op_symbolic(name, fn, OPSET)
    try:
        yield
    finally:
        for name in _SYMBOLICS:
            torch.onnx.unregister_custom_op_symbolic(name, OPSET)


def export_onnx(adapter, image, path, output_names, output_axes):
    """Export ``adapter`` (image (3, H, W) -> tuple of tensors) to ``path``, the image's height
    and width dynamic (and the outputs' ``output_axes``), and check it with ``onnx.checker``."""
    try:
        import onnx
    except ImportError:
        raise ExportError(
            "ONNX export needs the onnx package: pip install onnx onnxruntime "
            "(requirements/base.txt)"
        ) from None
    with _symbolics(), torch_deprecations(tracer_warnings=True):
        torch.onnx.export(
            adapter,
            (image,),
            path,
            dynamo=False,
            opset_version=OPSET,
            input_names=["image"],
            output_names=list(output_names),
            dynamic_axes={"image": {1: "height", 2: "width"}, **output_axes},
        )
    onnx.checker.check_model(path)


def onnx_session(path, device, threads=None):
    """An ONNX Runtime session for ``path``: CUDA first when ``device`` is a GPU (and ONNX Runtime
    has it), else the CPU provider; ``threads``: intra-op threads (default: ONNX Runtime's, one
    per physical core)."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(
            "running an ONNX model needs onnxruntime: pip install onnxruntime "
            "(requirements/base.txt)"
        ) from None
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise ExportError(
                "this onnxruntime has no CUDA provider: install onnxruntime-gpu, or run on cpu"
            )
        providers.insert(0, "CUDAExecutionProvider")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only (not the provider-assignment notes)
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=providers)
