"""``train.compile``: ``torch.compile`` of the parts of a model where the time goes.

The parts are the model's ``backbone`` (ViT + Simple Feature Pyramid, FPT's neck with its
ResNet, FPN with its ResNet; DETR's ResNet) and ``transformer`` (DETR's, iRPE included): the
dense tensor work. The R-CNN heads, box matching and losses stay eager (data-dependent shapes,
Python control flow: many graph breaks for little gain).

Each part is compiled in place (``nn.Module.compile``): parameter names, checkpoints, EMA, DDP
and ``--resume`` see the same module. Shapes: torch's automatic dynamic shapes (a part is
compiled for its first input shape; the first other shape recompiles it once with symbolic
sizes, which then serves every size). ``fpt.engine.hooks.CompileHook`` counts graphs, graph breaks and
recompiles and logs them once; a part that recompiles past torch's limit runs eager again (torch
does this itself), which the report says in one line. Compiled code is cached on disk
(``TORCHINDUCTOR_CACHE_DIR``: the run's ``<output_dir>/compile_cache`` unless set), so a resumed
or requeued run does not pay for compilation twice.
"""

import logging
import os
import time

import torch
import torch._dynamo
from torch import nn

__all__ = [
    "COMPILED_PARTS",
    "CompileError",
    "cache_hits",
    "compile_model",
    "dynamo_counts",
    "is_compile_failure",
]

logger = logging.getLogger(__name__)

COMPILED_PARTS = ("backbone", "transformer")


class CompileError(RuntimeError):
    """A part cannot be compiled: the message is one line naming it and the reason."""


def compile_model(model, mode="default", dynamic=None, backend="inductor", cache_dir=None):
    """Compile the :data:`COMPILED_PARTS` of ``model`` (unwrapped from DDP) in place.

    Args:
        model (nn.Module): a detectron2 meta-architecture (GeneralizedRCNN, DETR, ...).
        mode (str): ``torch.compile`` mode ("default", "reduce-overhead", "max-autotune").
        dynamic (bool or None): ``torch.compile``'s ``dynamic`` (None: automatic).
        backend (str): ``torch.compile``'s backend: "inductor" (generated kernels), or
            "aot_eager" / "eager" to debug (no code generated).
        cache_dir (str or None): where compiled code is cached, unless
            ``TORCHINDUCTOR_CACHE_DIR`` is set already.
    Returns:
        list[str]: the compiled parts, e.g. ``["backbone"]``.
    Raises:
        CompileError: no part to compile, or torch.compile unavailable here.
    """
    model = model.module if hasattr(model, "module") else model
    parts = [p for p in COMPILED_PARTS if isinstance(getattr(model, p, None), nn.Module)]
    if not parts:
        raise CompileError(
            f"train.compile: {type(model).__name__} has none of the parts compiled "
            f"({', '.join(COMPILED_PARTS)}); set train.compile.enabled=False"
        )
    if not torch._dynamo.is_dynamo_supported():
        raise CompileError(
            "train.compile: torch.compile is not supported with this Python / torch "
            f"({torch.__version__}); set train.compile.enabled=False"
        )
    if cache_dir and os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, _torch_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.abspath(cache_dir)
    if not torch.cuda.is_available():
        # a CUDA build of torch on a machine without CUDA says so at every C++ build
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    options = dict(dynamic=dynamic, backend=backend)
    if backend == "inductor":
        options["mode"] = mode
    for p in parts:
        try:
            getattr(model, p).compile(**options)
        except Exception as e:  # an unknown backend or mode
            raise CompileError(
                f"train.compile: cannot compile model.{p} with {options}: "
                f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            ) from None
    logger.info(
        f"train.compile: {', '.join(f'model.{p} ({type(getattr(model, p)).__name__})' for p in parts)} "
        f"compiled ({', '.join(f'{k}={v}' for k, v in options.items())}); cache "
        f"{os.environ.get('TORCHINDUCTOR_CACHE_DIR', 'torch default')}"
    )
    return parts


def _torch_cache_dir():
    """torch's default cache folder (torch writes it into the environment variable itself when
    it first asks, so the variable alone does not say whether a user set it)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        return os.path.abspath(default_cache_dir())
    except ImportError:
        return None


def dynamo_counts():
    """(graphs compiled, graph breaks) so far in this process."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def cache_hits():
    """(hits, misses) of the compiled-code caches (inductor's FX graph cache, AOT autograd's)."""
    from torch._dynamo.utils import counters

    hits = (
        counters["inductor"]["fxgraph_cache_hit"] + counters["aot_autograd"]["autograd_cache_hit"]
    )
    misses = (
        counters["inductor"]["fxgraph_cache_miss"] + counters["aot_autograd"]["autograd_cache_miss"]
    )
    return hits, misses


def is_compile_failure(error):
    """Did ``error`` come from torch.compile (tracing or the backend)?"""
    from torch._dynamo.exc import TorchDynamoException

    return isinstance(error, TorchDynamoException) or type(error).__module__.startswith(
        ("torch._dynamo", "torch._inductor")
    )
