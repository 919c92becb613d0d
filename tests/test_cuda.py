"""The CUDA paths against CPU references: ``pytest -m cuda`` (every test here is marked ``cuda``
and skipped where CUDA is missing; ``tools/gpu_check.sh`` runs them on a GPU machine).

What is compared, and how closely. Each result on CUDA is compared with a CPU reference by the
error relative to the reference's largest value, ``max |x - ref| / max |ref|``, per tensor (the
output and every gradient). TF32 is switched off here (``torch.backends.*.allow_tf32``), so fp32
on CUDA is true fp32. The tolerances, per dtype (forward / gradients):

* fp32 (no autocast): 1e-4 / 5e-4 against a CPU fp64 reference;
* fp16 autocast: 5e-3 / 1e-2 (fp16 keeps 11 significant bits: one rounding is 4.9e-4 relative);
* bf16 autocast: 3e-2 / 5e-2 (bf16 keeps 8 bits: one rounding is 3.9e-3 relative).

They are loose enough for the roundings of a few chained low-precision operations (on CPU, where
autocast keeps more ops in low precision than on CUDA, the errors reach at most half of them) and
tight enough to catch a dropped or doubled term: the attention tests check, on their fp64
reference, that removing the rel-pos bias, the iRPE terms or the mixture weights moves the
output by more than 5x the bf16 tolerance. ROIAlign is compared with the CPU in fp32 (1e-5), the
deformable convolution with CPU fp64 (the fp32 tolerances), DETR's outputs and losses and the
Predictor's detections with a CPU run (1e-4).

``FPT_CUDA_TESTS_DEVICE=cpu`` runs the same comparisons with "cpu" in place of "cuda": a dry run
of this file on a machine without a GPU (``tools/gpu_check.sh --cpu-dry-run`` does), not a test
of CUDA.
"""

import copy
import importlib.util
import os

import numpy as np
import pytest
import torch

DEVICE = os.environ.get("FPT_CUDA_TESTS_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs a CUDA device"
    ),
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# (forward, gradients): max |x - ref| / max |ref|
TOLERANCES = {"fp32": (1e-4, 5e-4), "fp16": (5e-3, 1e-2), "bf16": (3e-2, 5e-2)}
MEANINGFUL = 5 * TOLERANCES["bf16"][0]  # what a dropped term must move the output by, at least


@pytest.fixture(autouse=True)
def true_fp32():
    """No TF32 in matmuls and convolutions (cuDNN allows it by default) while a test runs."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def rel_err(x, ref):
    """max |x - ref| / max |ref|, in fp64 on the CPU."""
    x, ref = x.detach().double().cpu(), ref.detach().double().cpu()
    return ((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def assert_close_rel(x, ref, tol, what):
    assert x.shape == ref.shape, f"{what}: shape {tuple(x.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(x).all(), f"{what}: not finite"
    err = rel_err(x, ref)
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


def autocast(dtype_name):
    dtype = DTYPES[dtype_name]
    return torch.autocast(torch.device(DEVICE).type, dtype=dtype, enabled=dtype != torch.float32)


def _randn(*shape, seed, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


def _fill_(params, seed, scale):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def forward_and_grads(module, inputs, upstream, dtype_name="fp32"):
    """Output and gradients (inputs, then parameters) of ``(module(*inputs) * upstream).sum()``,
    the forward under autocast of ``dtype_name``."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    with autocast(dtype_name):
        out = module(*inputs)
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad((out.to(upstream.dtype) * upstream).sum(), inputs + params)
    return out, grads


def compare_to_reference(module, inputs, dtype_name, names, seed=99):
    """``module`` on DEVICE (fp32 parameters, autocast ``dtype_name``) against a CPU fp64 copy
    (no autocast): the output and every gradient. Returns (reference output, output)."""
    reference = copy.deepcopy(module).double()
    ref_inputs = [t.double() for t in inputs]
    upstream = _upstream(reference, ref_inputs, seed)
    ref_out, ref_grads = forward_and_grads(reference, ref_inputs, upstream)
    device_module = copy.deepcopy(module).float().to(DEVICE)
    upstream = upstream.float().to(DEVICE)
    out, grads = forward_and_grads(
        device_module, [t.float().to(DEVICE) for t in inputs], upstream, dtype_name
    )
    fwd_tol, grad_tol = TOLERANCES[dtype_name]
    assert_close_rel(out, ref_out, fwd_tol, "output")
    assert len(grads) == len(ref_grads) == len(names)
    for name, g, ref in zip(names, grads, ref_grads):
        assert_close_rel(g, ref, grad_tol, f"gradient of {name}")
    return ref_out, out


def _upstream(module, inputs, seed):
    with torch.no_grad():
        shape = module(*inputs).shape
    return _randn(*shape, seed=seed)


# ---------------------------------------------------------------------------------------------
# ViT attention: explicit / SDPA with an additive mask / SDPA with the bias folded into q, k /
# blocked with recompute
# ---------------------------------------------------------------------------------------------
# name: attn_impl
VIT_IMPLS = {
    "explicit": "explicit",
    "mask": "sdpa_mask",
    "folded": "sdpa_folded",
    "blocked": "blocked",
}
VIT_CASES = [
    ("explicit", None),
    ("mask", None),
    ("folded", None),
    ("blocked", None),
    ("explicit", "rpe-2.0-product-ctx-1-k"),
    ("mask", "rpe-2.0-product-ctx-1-k"),
    ("mask", "rpe-1.9-euc-bias-0-qk"),
    ("explicit", "rpe-2.0-cross-ctx-0-qkv"),  # a v table: the explicit path with rpe_v
]
VIT_GRID = (12, 14)  # non-square: (H, W) mix-ups show


def _vit_attention(rpe):
    from fpt.modeling.vit import Attention

    torch.manual_seed(0)
    attn = Attention(64, num_heads=4, use_rel_pos=True, input_size=VIT_GRID, rpe=rpe)
    # rel-pos and iRPE tables large enough to matter (they start at zero)
    _fill_([attn.rel_pos_h, attn.rel_pos_w], seed=1, scale=0.3)
    tables = [p for n, p in attn.named_parameters() if n.startswith("rpe_")]
    _fill_(tables, seed=2, scale=0.5)
    return attn


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("impl, rpe", VIT_CASES)
def test_vit_attention_matches_cpu_fp64(impl, rpe, dtype_name):
    from fpt.modeling.vit import set_vit_attention_impl

    attn = _vit_attention(rpe)
    set_vit_attention_impl(attn, VIT_IMPLS[impl])
    x = _randn(2, *VIT_GRID, 64, seed=3)
    names = ["x"] + [n for n, p in attn.named_parameters()]
    ref, out = compare_to_reference(attn, [x], dtype_name, names)
    assert out.dtype == DTYPES[dtype_name]  # what autocast gives callers
    # the terms under test are large enough for the tolerances to see them
    plain = copy.deepcopy(attn).double()
    set_vit_attention_impl(plain, "explicit")
    with torch.no_grad():
        plain.rel_pos_h.zero_()
        plain.rel_pos_w.zero_()
        assert rel_err(plain(x), ref) > MEANINGFUL
        if rpe is not None:
            plain = copy.deepcopy(attn).double()
            set_vit_attention_impl(plain, "explicit")
            for n, p in plain.named_parameters():
                if n.startswith("rpe_"):
                    p.zero_()
            assert rel_err(plain(x), ref) > MEANINGFUL


# ---------------------------------------------------------------------------------------------
# FPT: Mixture-of-Softmaxes attention, dot (Self-Transformer) and Euclidean (Grounding)
# ---------------------------------------------------------------------------------------------
class _MoS(torch.nn.Module):
    def __init__(self, similarity, impl, chunk_size=None):
        super().__init__()
        self.similarity, self.impl, self.chunk_size = similarity, impl, chunk_size

    def forward(self, q, k, v, pi):
        from fpt.layers.mos_attention import mos_attention

        return mos_attention(
            q, k, v, pi, self.similarity, impl=self.impl, chunk_size=self.chunk_size
        )


def _mos_inputs(num_parts):
    # features share an offset (||k||^2 >> ||q - k||^2, where the Euclidean form cancels);
    # 300 queries, 75 keys: not multiples of 8 or of the chunk size
    q = _randn(2, 300, 64, seed=10) + 1.0
    k = _randn(2, 75, 64, seed=11) + 1.0
    v = _randn(2, 75, 48, seed=12)
    pi = torch.softmax(_randn(2, num_parts, seed=13), dim=-1)
    return [q, k, v, pi]


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("impl", ["sdpa", "chunked"])
@pytest.mark.parametrize("similarity, num_parts", [("dot", 2), ("euclidean", 4)])
def test_mos_attention_matches_cpu_fp64(similarity, num_parts, impl, dtype_name):
    from fpt.layers.mos_attention import mos_attention

    inputs = _mos_inputs(num_parts)
    module = _MoS(similarity, impl, chunk_size=128 if impl == "chunked" else None)
    # the reference: the explicit formula ("naive"), CPU fp64
    naive = mos_attention(*inputs, similarity, impl="naive")
    with torch.no_grad():
        torch.testing.assert_close(module(*inputs), naive, rtol=1e-10, atol=1e-10)
    _, out = compare_to_reference(module, inputs, dtype_name, ["q", "k", "v", "pi"])
    assert out.dtype == DTYPES[dtype_name]
    # a uniform mixture differs from this one by more than the tolerances
    uniform = inputs[:3] + [torch.full_like(inputs[3], 1.0 / num_parts)]
    with torch.no_grad():
        assert rel_err(mos_attention(*uniform, similarity, impl="naive"), naive) > MEANINGFUL


@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_mos_attention_module_grounding_matches_cpu_fp64(dtype_name):
    """The Grounding Transformer's block: 1x1 projections, mixture weights, kv pooling, Euclidean
    MoS with 4 parts, on NCHW maps of two sizes."""
    from fpt.layers.mos_attention import MoSAttention

    torch.manual_seed(0)
    module = MoSAttention(32, num_parts=4, similarity="euclidean", kv_pool=2)
    fine = _randn(2, 32, 20, 24, seed=20)
    coarse = _randn(2, 32, 10, 12, seed=21)
    names = ["query_map", "key_map"] + [n for n, _ in module.named_parameters()]
    compare_to_reference(module, [fine, coarse], dtype_name, names)


# ---------------------------------------------------------------------------------------------
# detectron2 ops on CUDA: ROIAlign (torchvision's roi_align underneath), deformable conv shim
# ---------------------------------------------------------------------------------------------
def _rois():
    # (batch index, x0, y0, x1, y1) in image pixels: fractional, tiny, partly outside the map
    return torch.tensor(
        [
            [0, 3.3, 4.7, 60.2, 45.9],
            [0, 10.0, 10.0, 10.6, 11.1],
            [1, -8.5, 20.25, 40.0, 90.0],
            [1, 100.0, 2.0, 230.4, 70.6],
            [0, 0.0, 0.0, 207.0, 159.0],
        ]
    )


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_aligned_cuda_matches_cpu(sampling_ratio):
    from detectron2.layers import ROIAlign

    pooler = ROIAlign((7, 7), spatial_scale=0.25, sampling_ratio=sampling_ratio, aligned=True)
    x = _randn(2, 8, 40, 52, seed=30, dtype=torch.float32)
    upstream = _randn(5, 8, 7, 7, seed=31, dtype=torch.float32)
    results = {}
    for device in ("cpu", DEVICE):
        xd = x.to(device).requires_grad_()
        out = pooler(xd, _rois().to(device))
        (grad,) = torch.autograd.grad((out * upstream.to(device)).sum(), [xd])
        results[device] = (out, grad)
    out, grad = results[DEVICE]
    assert out.device.type == torch.device(DEVICE).type
    assert_close_rel(out, results["cpu"][0], 1e-5, "ROIAlign output")
    assert_close_rel(grad, results["cpu"][1], 1e-5, "ROIAlign input gradient")
    # aligned=True is not aligned=False: the half-pixel shift is there on CUDA too
    legacy = ROIAlign((7, 7), 0.25, sampling_ratio, aligned=False)(x.to(DEVICE), _rois().to(DEVICE))
    assert rel_err(legacy, results["cpu"][0]) > 1e-2


def test_roi_align_fp16_autocast_close_to_fp32():
    """Mask R-CNN under AMP pools fp16 features (detectron2's ROIAlign casts the boxes to the
    features' type, so the reference takes the same fp16-rounded features and boxes): torchvision
    runs roi_align in fp32 under autocast, and the result is within fp16 rounding."""
    from detectron2.layers import ROIAlign

    pooler = ROIAlign((14, 14), spatial_scale=0.25, sampling_ratio=0, aligned=True)
    x = _randn(2, 8, 40, 52, seed=32, dtype=torch.float32).half().to(DEVICE)
    rois = _rois().to(DEVICE)
    ref = pooler(x.float(), rois.half().float())
    with autocast("fp16"):
        out = pooler(x, rois)
    assert out.dtype == torch.float16
    assert_close_rel(out, ref, TOLERANCES["fp16"][0], "ROIAlign under fp16 autocast")


def test_roi_pooler_multilevel_cuda_matches_cpu():
    """detectron2's ROIPooler (ROIAlignV2 over 4 FPN levels, boxes assigned by size)."""
    from detectron2.modeling.poolers import ROIPooler
    from detectron2.structures import Boxes

    pooler = ROIPooler((7, 7), scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32), sampling_ratio=0,
                       pooler_type="ROIAlignV2")  # fmt: skip
    feats = [_randn(2, 8, 64 // s, 80 // s, seed=40 + s, dtype=torch.float32) for s in (1, 2, 4, 8)]
    g = torch.Generator().manual_seed(44)
    xy = torch.rand(2, 30, 2, generator=g) * torch.tensor([250.0, 200.0])
    wh = torch.rand(2, 30, 2, generator=g) ** 2 * 250 + 2
    boxes = torch.cat([xy, xy + wh], dim=-1)
    outs = {}
    for device in ("cpu", DEVICE):
        outs[device] = pooler([f.to(device) for f in feats], [Boxes(b.to(device)) for b in boxes])
    assert_close_rel(outs[DEVICE], outs["cpu"], 1e-5, "ROIPooler output")


@pytest.mark.parametrize("modulated", [False, True])
def test_deform_conv_cuda_matches_cpu_fp64(modulated):
    """detectron2's DeformConv / ModulatedDeformConv (through fpt.compat's torchvision shim
    unless a compiled detectron2 is installed), forward and backward, offsets reaching outside
    the map, 2 groups and 2 deformable groups."""
    from detectron2.layers import DeformConv, ModulatedDeformConv

    torch.manual_seed(0)
    kwargs = dict(kernel_size=3, padding=1, groups=2, deformable_groups=2)
    if modulated:
        layer = ModulatedDeformConv(4, 6, bias=True, **kwargs)
    else:
        layer = DeformConv(4, 6, bias=False, **kwargs)
    x = _randn(2, 4, 9, 11, seed=50)
    offset = (torch.rand(2, 2 * 2 * 9, 9, 11, generator=torch.Generator().manual_seed(51),
                         dtype=torch.float64) * 5 - 2.5)  # fmt: skip
    inputs = [x, offset]
    names = ["x", "offset"]
    if modulated:
        inputs.append(torch.rand(2, 2 * 9, 9, 11, generator=torch.Generator().manual_seed(52),
                                 dtype=torch.float64))  # fmt: skip
        names.append("mask")
    names += [n for n, _ in layer.named_parameters()]
    compare_to_reference(layer, inputs, "fp32", names)


# ---------------------------------------------------------------------------------------------
# iRPE: bucket ids, the q/k terms (gather) and the v term (scatter) on CUDA
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["euc", "quant", "cross_rows", "cross_cols", "product"])
@pytest.mark.parametrize("ratio", [1.9, 2.0])
def test_irpe_bucket_ids_on_cuda_equal_cpu(method, ratio):
    """Ids computed on the device (piecewise log index in fp32 there) are the CPU's, exactly:
    a checkpoint's tables mean the same on both."""
    from fpt.layers.irpe import bucket_ids, clear_bucket_cache

    clear_bucket_cache()
    for hw in [(7, 3), (25, 34), (34, 50)]:
        on_device = bucket_ids(*hw, method, ratio, device=DEVICE)
        assert on_device.device.type == torch.device(DEVICE).type
        assert torch.equal(on_device.cpu(), bucket_ids(*hw, method, ratio, device="cpu")), hw
    clear_bucket_cache()


class _Term(torch.nn.Module):
    """One iRPE term as a module of its input on a fixed grid: q/k (B, H, L, D) -> logit term
    (B, H, L, L); attention (B, H, L, L) -> v term (B, H, L, D); for a bias table, which does not
    depend on its input, logits (B, H, L, L) -> logits + term."""

    def __init__(self, rpe, hw):
        super().__init__()
        self.rpe, self.hw = rpe, hw

    def forward(self, x):
        term = self.rpe(x, self.hw)
        return x + term if _mode(self.rpe) == "bias" else term


def _mode(rpe):
    return rpe.rp_rows.mode if hasattr(rpe, "rp_rows") else rpe.mode


def _term_reference(rpe, x, hw):
    """What :class:`_Term` computes, in Cream's formulation (flat-indexed lookup, materialized v
    table), on the CPU."""
    from fpt.layers.irpe import IRPECross, bucket_ids, irpe_qk_term_reference, irpe_v_term_reference

    if isinstance(rpe, IRPECross):
        rows, cols = _term_reference(rpe.rp_rows, x, hw), _term_reference(rpe.rp_cols, x, hw)
        return rows + cols - x if _mode(rpe) == "bias" else rows + cols
    ids = bucket_ids(*hw, rpe.method, rpe.ratio)
    if rpe.mode == "bias":
        return x + rpe.lookup_table_bias[:, ids]
    if rpe.transposed:
        return irpe_qk_term_reference(x, rpe.lookup_table_weight, ids)
    return irpe_v_term_reference(x, rpe.lookup_table_weight, ids)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize(
    "spec", ["rpe-2.0-product-ctx-1-qkv", "rpe-1.9-cross-ctx-0-qkv", "rpe-2.0-euc-bias-0-qk"]
)
def test_irpe_terms_match_cpu_fp64_reference(spec, dtype_name):
    from fpt.layers.irpe import build_rpe

    hw, heads, dim = (9, 13), 4, 16
    length = hw[0] * hw[1]
    for letter, rpe in zip("qkv", build_rpe(spec, dim, heads)):
        if rpe is None:
            continue
        _fill_(rpe.parameters(), seed=60, scale=0.5)
        if letter == "v":
            x = torch.softmax(_randn(2, heads, length, length, seed=61), dim=-1)
        elif _mode(rpe) == "bias":  # logits
            x = _randn(2, heads, length, length, seed=62)
        else:  # q or k, scaled
            x = _randn(2, heads, length, dim, seed=63, scale=dim**-0.5)
        term = _Term(rpe, hw)
        with torch.no_grad():  # the CPU fp64 reference below is Cream's formulation
            ref = _term_reference(copy.deepcopy(rpe).double(), x, hw)
            torch.testing.assert_close(copy.deepcopy(term).double()(x), ref, rtol=1e-10, atol=1e-10)
        names = [f"{letter}: x"] + [f"{letter}: {n}" for n, _ in rpe.named_parameters()]
        compare_to_reference(term, [x], dtype_name, names)


def test_irpe_v_term_under_fp16_autocast_accumulates_in_fp32():
    """fp16 attention weights (many small ones per bucket, 48 x 48 grid): the per-bucket sums are
    accumulated in fp32, so the term stays within fp16 rounding of the fp64 result, where
    summing in fp16 is off by far more."""
    from fpt.layers.irpe import IRPE

    hw, heads, dim = (48, 48), 2, 8
    length = hw[0] * hw[1]
    rpe = IRPE(dim, heads, mode="ctx", method="product", ratio=2.0, transposed=False,
               shared_head=False)  # fmt: skip
    with torch.no_grad():
        g = torch.Generator().manual_seed(70)
        rpe.lookup_table_weight.copy_(torch.rand(heads, rpe.num_buckets, dim, generator=g) + 0.5)
    # the reference: the same term in fp64 on the CPU (scatter into buckets, as Cream's
    # materialized formulation in tests/test_irpe.py), from the same fp16 weights
    reference = copy.deepcopy(rpe).double()
    attn = (_randn(1, heads, length, length, seed=71, dtype=torch.float32) * 0.5).softmax(-1)
    attn = attn.half()
    attn64 = attn.double().requires_grad_()
    ref = reference(attn64, hw)
    rpe = rpe.to(DEVICE)
    attn = attn.to(DEVICE).requires_grad_()
    with autocast("fp16"):
        out = rpe(attn, hw)
    assert out.dtype == torch.float16
    tol = 2e-3  # a few fp16 roundings of the result
    assert_close_rel(out, ref, tol, "v term under fp16 autocast")
    # the same sums accumulated in fp16 (each addition rounded, as fp16 atomics do) miss by
    # far more (~1.2e-2): the check above can tell
    in_fp16 = _fp16_accumulated_v_term(attn.detach().cpu(), reference.lookup_table_weight, hw)
    assert rel_err(in_fp16, ref) > 2 * tol
    # gradients: to the fp16 attention and to the fp32 table
    upstream = _randn(*out.shape, seed=72)
    (out.float() * upstream.float().to(DEVICE)).sum().backward()
    (ref * upstream).sum().backward()
    assert attn.grad.dtype == torch.float16
    assert_close_rel(attn.grad, attn64.grad, TOLERANCES["fp16"][1], "gradient of attn")
    grad_table = rpe.lookup_table_weight.grad
    assert grad_table.dtype == torch.float32
    assert_close_rel(
        grad_table, reference.lookup_table_weight.grad, TOLERANCES["fp16"][1], "gradient of table"
    )


def _fp16_accumulated_v_term(attn, table, hw):
    """The v term with its bucket sums accumulated in fp16, key by key (CPU)."""
    from fpt.layers.irpe import bucket_ids

    B, H, L, _ = attn.shape
    ids = bucket_ids(*hw, "product", 2.0).repeat(B * H, 1)
    weights = attn.reshape(B * H * L, L)
    sums = torch.zeros(B * H * L, table.shape[-2], dtype=torch.float16)
    rows = torch.arange(B * H * L)
    for j in range(L):
        sums[rows, ids[:, j]] += weights[:, j]
    return sums.double().view(B, H, L, -1) @ table.detach().double()


# ---------------------------------------------------------------------------------------------
# whole models: DETR (with and without iRPE), the Predictor
# ---------------------------------------------------------------------------------------------
def _detr_tiny(enc_rpe):
    from detectron2.config import instantiate

    from fpt.config import load_config

    cfg = load_config(
        os.path.join(REPO, "configs/Shapes/detr_tiny.py"),
        [f"model.transformer.enc_rpe={enc_rpe or 'null'}"],
    )
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    for n, p in model.named_parameters():  # iRPE tables start at zero: make them matter
        if "rpe_" in n:
            _fill_([p], seed=80, scale=0.3)
    return model


def _detr_batch(with_instances=False):
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(81)
    batch = []
    for h, w in [(96, 128), (128, 112)]:  # two sizes: the padding mask is exercised
        item = {"image": torch.rand(3, h, w, generator=g) * 255, "height": h, "width": w}
        if with_instances:
            inst = Instances((h, w))
            inst.gt_boxes = Boxes(
                torch.tensor([[10.0, 12.0, 50.0, 60.0], [40.0, 30.0, 90.0, 88.0]])
            )
            inst.gt_classes = torch.tensor([0, 2])
            item["instances"] = inst
        batch.append(item)
    return batch


@pytest.mark.parametrize("enc_rpe", [None, "rpe-2.0-product-ctx-1-k"])
def test_detr_tiny_cuda_matches_cpu(enc_rpe):
    """configs/Shapes/detr_tiny.py (random weights): inference outputs (all 10 queries, in query
    order) and training losses on CUDA equal the CPU's within fp32 noise."""
    from detectron2.utils.events import EventStorage

    model = _detr_tiny(enc_rpe)
    results = {}
    for device in ("cpu", DEVICE):
        m = copy.deepcopy(model).to(device).eval()
        with torch.no_grad():
            outs = m(_detr_batch())
        m.train()
        with EventStorage():
            losses = m(_detr_batch(with_instances=True))
        results[device] = outs, {k: v.detach() for k, v in losses.items()}
    (cpu_outs, cpu_losses), (dev_outs, dev_losses) = results["cpu"], results[DEVICE]
    for cpu_out, dev_out in zip(cpu_outs, dev_outs):
        a, b = cpu_out["instances"], dev_out["instances"].to("cpu")
        assert len(a) == len(b) == 10
        assert torch.equal(a.pred_classes, b.pred_classes)
        assert_close_rel(b.scores, a.scores, 1e-4, "scores")
        assert_close_rel(b.pred_boxes.tensor, a.pred_boxes.tensor, 1e-4, "boxes")
    assert cpu_losses.keys() == dev_losses.keys()
    for k in cpu_losses:
        assert_close_rel(dev_losses[k], cpu_losses[k], 1e-4, k)


def _padding_mask():
    """(2, 6, 8) bool: the second of two feature maps padded right and below (True = padding)."""
    mask = torch.zeros(2, 6, 8, dtype=torch.bool)
    mask[1, 4:] = mask[1, :, 5:] = True
    return mask


class _DETRSelfAttention(torch.nn.Module):
    """An encoder self-attention of DETR (64 wide, 4 heads), iRPE tables filled, over a batch
    whose second item is padded: (L, B, C) -> (L, B, C)."""

    def __init__(self, enc_rpe):
        from fpt.modeling.detr.transformer import RPEMultiheadAttention, parse_rpe_spec

        super().__init__()
        torch.manual_seed(0)
        self.attn = RPEMultiheadAttention(64, 4, rpe=parse_rpe_spec(enc_rpe))
        for n, p in self.attn.named_parameters():
            if "rpe_" in n:
                _fill_([p], seed=80, scale=0.3)
        self.register_buffer("mask", _padding_mask().flatten(1))

    def forward(self, x):
        return self.attn(x, x, x, hw=(6, 8), key_padding_mask=self.mask)[0]


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("enc_rpe", [None, "rpe-2.0-product-ctx-1-k"])
def test_detr_attention_with_padding_matches_cpu_fp64(enc_rpe, dtype_name):
    """DETR's encoder attention, plain and with iRPE, with a key padding mask, under fp16 / bf16
    autocast (the fused SDPA kernels it takes on CUDA) and fp32: output and gradients against
    CPU fp64 at the file's tolerances. The padding must stay finite (no -inf from mask + iRPE
    in fp16)."""
    module = _DETRSelfAttention(enc_rpe)
    names = ["x"] + [n for n, p in module.named_parameters() if p.requires_grad]
    compare_to_reference(module, [_randn(48, 2, 64, seed=83)], dtype_name, names)


class _DETRTransformer(torch.nn.Module):
    """configs/Shapes/detr_tiny.py's transformer (2 + 2 layers, 64 wide, 4 heads) on two padded
    feature maps: decoder outputs and encoder memory, flattened together."""

    def __init__(self, enc_rpe):
        from fpt.modeling.detr.transformer import Transformer

        super().__init__()
        torch.manual_seed(0)
        self.transformer = Transformer(64, 4, 2, 2, 128, dropout=0.0, enc_rpe=enc_rpe)
        for n, p in self.transformer.named_parameters():
            if "rpe_" in n:
                _fill_([p], seed=80, scale=0.3)
        self.query = torch.nn.Parameter(_randn(10, 64, seed=82, dtype=torch.float32))
        self.register_buffer("mask", _padding_mask())

    def forward(self, src, pos):
        hs, memory = self.transformer(src, self.mask, self.query, pos)
        return torch.cat([hs.flatten(), memory.flatten()])


# ||g - ref|| / ||ref|| of every gradient through the whole transformer under autocast. Each
# attention is within the file's tolerances (the test above); what is chained after it is not:
# the post-norm FFN's weight gradient is a sum over tokens that largely cancels, so one rounding
# of its terms moves it by much more than its own size. Measured on CPU: 0.036 (fp16), 0.062
# (bf16); the forward stays within the file's tolerances.
TRANSFORMER_GRAD_TOL = {"fp32": 1e-4, "fp16": 0.1, "bf16": 0.15}


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("enc_rpe", [None, "rpe-2.0-product-ctx-1-k"])
def test_detr_transformer_matches_cpu_fp64(enc_rpe, dtype_name):
    """DETR's whole transformer, plain and with iRPE, padded, under fp16 / bf16 autocast and
    fp32: the output (decoder and memory) against CPU fp64 at the file's forward tolerance, every
    gradient finite and within TRANSFORMER_GRAD_TOL (relative to its norm)."""
    module = _DETRTransformer(enc_rpe)
    inputs = [_randn(2, 64, 6, 8, seed=83), _randn(2, 64, 6, 8, seed=84, scale=0.5)]
    reference = copy.deepcopy(module).double()
    upstream = _upstream(reference, inputs, seed=99)
    ref_out, ref_grads = forward_and_grads(reference, inputs, upstream)
    out, grads = forward_and_grads(
        copy.deepcopy(module).to(DEVICE),
        [t.float().to(DEVICE) for t in inputs],
        upstream.float().to(DEVICE),
        dtype_name,
    )
    assert_close_rel(out, ref_out, TOLERANCES[dtype_name][0], "output")
    names = ["src", "pos"] + [n for n, p in module.named_parameters() if p.requires_grad]
    for name, g, ref in zip(names, grads, ref_grads, strict=True):
        assert torch.isfinite(g).all(), f"gradient of {name}: not finite"
        err = ((g.double().cpu() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
        assert err <= TRANSFORMER_GRAD_TOL[dtype_name], f"gradient of {name}: {err:.2e}"


def _demo_support():
    if "demo_support" not in __import__("sys").modules:
        path = os.path.join(REPO, "tests", "data", "demo_support.py")
        spec = importlib.util.spec_from_file_location("demo_support", path)
        module = importlib.util.module_from_spec(spec)
        __import__("sys").modules["demo_support"] = module
        spec.loader.exec_module(module)
    return __import__("sys").modules["demo_support"]


def test_predictor_on_cuda_matches_cpu(tmp_path):
    """The tiny Mask R-CNN of the predictor tests, on two real photos, batch 2: outputs come back
    on the CPU, and the top detections (score, class, box, mask) are the CPU run's."""
    from detectron2.config import instantiate

    from fpt.config import load_config
    from fpt.predictor import Predictor

    S = _demo_support()
    torch.manual_seed(0)
    model = instantiate(load_config(S.TINY_LAZY).model)
    with torch.no_grad():  # spread the random scores, so that their order is not a near-tie
        model.roi_heads.box_predictor.cls_score.weight.mul_(20)
        model.proposal_generator.rpn_head.objectness_logits.weight.mul_(20)
    ckpt = S.save_checkpoint(model, tmp_path)
    cfg = load_config(S.TINY_LAZY, [f"train.init_checkpoint={ckpt}"])
    images = [
        np.asarray(S.skimage_photo(name, 200).convert("RGB"))[:, :, ::-1].copy()
        for name in ("astronaut.png", "coffee.png")
    ]
    outputs = {}
    for device in ("cpu", DEVICE):
        predictor = Predictor(cfg, device=device, score_threshold=0.0, batch_size=2)
        assert next(predictor.model.parameters()).device.type == torch.device(device).type
        outputs[device] = predictor.predict(images)
    for cpu_out, dev_out in zip(outputs["cpu"], outputs[DEVICE]):
        a, b = cpu_out["instances"], dev_out["instances"]
        for field in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
            value = b.get(field)
            value = value.tensor if field == "pred_boxes" else value
            assert value.device.type == "cpu", field
        assert len(b) > 5
        order = b.scores.argsort(descending=True)[:5]
        for i in order.tolist():
            box = b.pred_boxes.tensor[i]
            dist = (a.pred_boxes.tensor - box).abs().max(dim=1).values
            match = int(dist.argmin())
            assert dist[match] < 1e-2, f"no CPU detection at {box.tolist()}"
            assert a.pred_classes[match] == b.pred_classes[i]
            assert abs(float(a.scores[match] - b.scores[i])) < 1e-4
            agree = (a.pred_masks[match] == b.pred_masks[i]).float().mean()
            assert agree > 0.999, f"masks agree on {agree:.4f} of the pixels"
