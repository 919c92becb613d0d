"""Parameters and FLOPs of a model on an HxW input (fvcore, as detectron2's analyze_model).

Usage::

    from fpt.utils.analysis import analyze_model, format_complexity_table
    result = analyze_model(model, height=1024, width=1024)
    result["flops"]["total"], result["flops"]["backbone"], result["params"]["total"]
    print(format_complexity_table(result))

FLOPs follow fvcore's convention (one fused multiply-add = one flop; element-wise ops, softmax,
NMS not counted), which is how detectron2/ViTDet papers report them. For detectors
(``GeneralizedRCNN``-like models taking ``[{"image": (3, H, W)}]``) the count is done in eval
mode with no detections (score thresholds above 1), so it is deterministic: backbone + RPN +
box head on the RPN proposals; the mask head then runs on no box.
"""

import contextlib
from collections import OrderedDict

import torch
from fvcore.nn import parameter_count
from fvcore.nn.jit_handles import get_shape

from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.utils.analysis import FlopCountAnalysis

__all__ = ["analyze_model", "format_complexity_table", "sdpa_flop_jit"]


def _unfolded_head_dim(value):
    """Head dim of an SDPA input before :func:`fpt.layers.rel_pos.fold_decomposed_rel_pos`
    extended it: the first tensor of the ``aten::cat`` that built the folded key, or the input of
    the ``aten::pad``/``aten::constant_pad_nd`` that zero-padded the value; else its own."""
    node = value.node()
    if node.kind() == "aten::cat":
        parts = list(node.inputs())[0].node()
        if parts.kind() == "prim::ListConstruct":
            return get_shape(list(parts.inputs())[0])[-1]
    if node.kind() in ("aten::pad", "aten::constant_pad_nd"):
        return get_shape(list(node.inputs())[0])[-1]
    return get_shape(value)[-1]


def sdpa_flop_jit(inputs, outputs):
    """fvcore handle for ``aten::scaled_dot_product_attention``: the two matmuls,
    q (..., L, E) @ k^T (..., E, S) and attn (..., L, S) @ v (..., S, Ev), as an explicit
    ``softmax(q k^T) v`` is counted.

    With the rel-pos bias folded into q and k (ViT's default), E and Ev are the head dims before
    folding: the one-hot/zero columns only re-express the bias addition (the ``<q, R>`` einsums
    are counted where they run), so the count is the model's math, equal to the masked and the
    explicit formulations (and to upstream ViTDet's)."""
    q = get_shape(inputs[0])
    batch = 1
    for d in q[:-2]:
        batch *= d
    L, S = q[-2], get_shape(inputs[1])[-2]
    return batch * L * S * (_unfolded_head_dim(inputs[1]) + _unfolded_head_dim(inputs[2]))


@contextlib.contextmanager
def _no_detections(model):
    """Eval mode, and score thresholds above 1 on every box predictor (restored on exit)."""
    predictors = [m for m in model.modules() if isinstance(m, FastRCNNOutputLayers)]
    saved = [p.test_score_thresh for p in predictors]
    was_training = model.training
    model.eval()
    try:
        for p in predictors:
            p.test_score_thresh = 1.1
        yield
    finally:
        for p, t in zip(predictors, saved):
            p.test_score_thresh = t
        model.train(was_training)


def _default_inputs(model, height, width):
    """A random image: ``[{"image": (3, H, W)}]`` for detectors, a (1, 3, H, W) tensor else."""
    image = torch.rand(3, height, width) * 255
    if hasattr(model, "preprocess_image"):
        return [{"image": image}]
    return (image[None] / 255,)


def _by_top_level(counts):
    """{"": total, "a": .., "a.b": ..} -> {"total": total, "a": ..} (top-level modules only)."""
    out = OrderedDict(total=int(counts.get("", 0)))
    for name, value in counts.items():
        if name and "." not in name:
            out[name] = int(value)
    return out


def analyze_model(model, height=1024, width=1024, inputs=None):
    """Parameters and fvcore FLOPs of ``model``, in total and per top-level module.

    Args:
        model (nn.Module): a detector taking ``list[dict]`` (e.g. ``GeneralizedRCNN``) or a
            module taking one (N, 3, H, W) tensor (e.g. a backbone).
        height, width (int): size of the random input image when ``inputs`` is None.
        inputs: explicit inputs (a list of dicts for detectors, a tuple of tensors otherwise).
    Returns:
        dict: ``{"params": {"total": int, <module>: int, ...},
        "flops": {"total": int, <module>: int, ...}, "unsupported_ops": {op: count}}``.
        FLOPs are for one image of ``height x width``.
    """
    if inputs is None:
        inputs = _default_inputs(model, height, width)
    params = _by_top_level(parameter_count(model))
    with _no_detections(model), torch.no_grad():
        flops = FlopCountAnalysis(model, inputs)
        flops.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        flops.tracer_warnings("none")
        by_module = flops.by_module()
        unsupported = dict(flops.unsupported_ops())
    # detectron2 traces a wrapper around the model: its names start with "model."
    counts = {}
    for name, value in by_module.items():
        if name == "model":
            counts[""] = value
        elif name.startswith("model."):
            counts[name[len("model.") :]] = value
    return {"params": params, "flops": _by_top_level(counts), "unsupported_ops": unsupported}


def format_complexity_table(result):
    """A text table of :func:`analyze_model`'s result (params in M, FLOPs in G)."""
    names = list(result["params"])
    names += [n for n in result["flops"] if n not in result["params"]]
    rows = [("module", "params (M)", "GFLOPs")]
    for n in names:
        p, f = result["params"].get(n), result["flops"].get(n)
        rows.append(
            (n, "-" if p is None else f"{p / 1e6:.3f}", "-" if f is None else f"{f / 1e9:.2f}")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
