"""iRPE layer (fpt/layers/irpe.py) against docs/irpe_detr.md sections 2, 3 and 11.1-11.4.

Hand tables of the piecewise index and the bucket ids, an independent naive (Python math, loops
over token pairs) reference for the ids, the bucket cache, the spec parser, the fast gather /
scatter terms against Cream's flat-index / materialized formulation and against a per-(i, j) loop,
and the parameter names, shapes and init.
"""

import dataclasses
import math
import re

import pytest
import torch
from torch import nn

from fpt.layers import irpe
from fpt.layers.irpe import (
    IRPE,
    IRPECross,
    RPESpec,
    add_irpe_logits,
    bucket_ids,
    build_rpe,
    clear_bucket_cache,
    irpe_qk_term_reference,
    irpe_v_term_reference,
    num_buckets,
    parse_rpe_spec,
    piecewise_index,
    relative_positions,
)

RATIOS = (1.9, 2.0, 2.5, 3.0)
SPATIAL_METHODS = ("euc", "quant", "cross_rows", "cross_cols", "product")


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_bucket_cache()
    yield
    clear_bucket_cache()


# ---------------------------------------------------------------------------------------------
# naive references, written from the spec (section 2.1, 2.2) with Python's math
# ---------------------------------------------------------------------------------------------
def naive_g(x, ratio):
    """g(x) of section 2.1 in float64 Python, cast to int (truncation toward zero)."""
    alpha, beta, gamma = ratio, 2 * ratio, 8 * ratio
    if abs(x) <= alpha:
        value = round(x)
    else:
        sign = 1 if x > 0 else -1
        value = sign * min(
            beta, round(alpha + math.log(abs(x) / alpha) / math.log(gamma / alpha) * (beta - alpha))
        )
    return int(value)


def naive_bucket_ids(height, width, method, ratio, skip=0):
    """Bucket ids (L, L) as nested lists, one token pair at a time."""
    beta_int = int(2 * ratio)
    side = 2 * beta_int + 1
    extra = side * side if method == "product" else side
    pos = [(t // width, t % width) for t in range(height * width)]
    length = skip + height * width
    out = [[extra] * length for _ in range(length)]
    for i, (ri, ci) in enumerate(pos):
        for j, (rj, cj) in enumerate(pos):
            dr, dc = ri - rj, ci - cj  # query minus key
            if method == "euc":
                b = naive_g(round(math.sqrt(dr * dr + dc * dc)), ratio) + beta_int
            elif method == "quant":
                b = naive_g(dr * dr + dc * dc, ratio) + beta_int
            elif method == "cross_rows":
                b = naive_g(dr, ratio) + beta_int
            elif method == "cross_cols":
                b = naive_g(dc, ratio) + beta_int
            elif method == "product":
                b = (naive_g(dr, ratio) + beta_int) * side + naive_g(dc, ratio) + beta_int
            else:
                raise AssertionError(method)
            out[skip + i][skip + j] = b
    return out


def _one_line_value_error(excinfo):
    message = str(excinfo.value)
    assert excinfo.type is ValueError
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------------------------
# 1. hand tables
# ---------------------------------------------------------------------------------------------
# g(|x|) for |x| = 0..40 (section 2.1's table)
G_TABLE = {
    1.9: [0, 1, 2, 2] + [3] * 37,
    2.0: [0, 1, 2, 2] + [3] * 6 + [4] * 31,
    2.5: [0, 1, 2, 3, 3, 3] + [4] * 8 + [5] * 27,
    3.0: [0, 1, 2, 3, 3, 4, 4, 4, 4] + [5] * 8 + [6] * 24,
}
FIRST_SATURATED = {1.9: 4, 2.0: 10, 2.5: 14, 3.0: 17}
BETA_INT = {1.9: 3, 2.0: 4, 2.5: 5, 3.0: 6}


@pytest.mark.parametrize("ratio", RATIOS)
def test_piecewise_index_hand_table(ratio):
    expected = G_TABLE[ratio]
    assert len(expected) == 41
    x = torch.arange(41)
    g = piecewise_index(x, ratio)
    assert g.dtype == torch.long
    assert g.tolist() == expected
    # the same from float inputs, and from the naive float64 formula
    assert piecewise_index(x.double(), ratio).tolist() == expected
    assert [naive_g(v, ratio) for v in range(41)] == expected
    # saturation: the first |x| reaching beta' and nothing above beta'
    beta_int = BETA_INT[ratio]
    assert beta_int == int(2 * ratio)
    assert expected.index(beta_int) == FIRST_SATURATED[ratio]
    assert max(g.tolist()) == beta_int
    # odd
    assert piecewise_index(-x, ratio).tolist() == [-v for v in expected]


def test_piecewise_index_ratio_1_9_truncates_to_3():
    """beta = 3.8 is not an integer: the clipped 3.8 becomes 3, never 4 (|x| >= 4)."""
    x = torch.arange(4, 1000)
    assert (piecewise_index(x, 1.9) == 3).all()
    assert (piecewise_index(-x, 1.9) == -3).all()
    assert (piecewise_index(x.float(), 1.9) == 3).all()
    # 2.0: "|x| per value" column
    g = piecewise_index(torch.arange(0, 30), 2.0).tolist()
    per_value = {v: [x for x in range(30) if g[x] == v] for v in range(5)}
    assert per_value[0] == [0] and per_value[1] == [1] and per_value[2] == [2, 3]
    assert per_value[3] == list(range(4, 10)) and per_value[4] == list(range(10, 30))


@pytest.mark.parametrize("ratio", RATIOS)
def test_piecewise_index_float32_equals_float64_and_odd(ratio):
    x64 = torch.arange(-200, 201, dtype=torch.float64)
    g64 = piecewise_index(x64, ratio)
    g32 = piecewise_index(x64.float(), ratio)
    gint = piecewise_index(x64.long(), ratio)
    assert torch.equal(g32, g64) and torch.equal(gint, g64)
    assert torch.equal(piecewise_index(-x64, ratio), -g64)
    assert g64.tolist() == [naive_g(int(v), ratio) for v in range(-200, 201)]
    assert g64.abs().max().item() == BETA_INT[ratio]
    # the input is untouched and g carries no graph
    xr = x64.clone().requires_grad_()
    assert not piecewise_index(xr, ratio).requires_grad
    assert torch.equal(xr.detach(), x64)


def test_piecewise_index_rounds_float_inputs():
    """|x| <= alpha: round half to even; beyond: the log formula on the float value."""
    x = torch.tensor([0.4, 0.6, 1.4, -1.6, 2.5, -2.5, 3.4, 5.2, -9.7], dtype=torch.float64)
    expected = [naive_g(v, 3.0) for v in x.tolist()]
    assert expected[:6] == [0, 1, 1, -2, 2, -2]
    assert piecewise_index(x, 3.0).tolist() == expected
    assert piecewise_index(x.float(), 3.0).tolist() == expected


def test_relative_positions_query_minus_key():
    diff = relative_positions(2, 3)
    assert diff.shape == (6, 6, 2) and diff.dtype == torch.long
    # token 5 = (1, 2), token 0 = (0, 0)
    assert diff[5, 0].tolist() == [1, 2]
    assert diff[0, 5].tolist() == [-1, -2]
    assert diff[1, 3].tolist() == [-1, 1]


WORKED_TABLE = [
    [24, 23, 22, 17, 16, 15],
    [25, 24, 23, 18, 17, 16],
    [26, 25, 24, 19, 18, 17],
    [31, 30, 29, 24, 23, 22],
    [32, 31, 30, 25, 24, 23],
    [33, 32, 31, 26, 25, 24],
]


def test_worked_product_table():
    ids = bucket_ids(2, 3, "product", 1.9)
    assert ids.dtype == torch.long and ids.shape == (6, 6)
    assert ids.tolist() == WORKED_TABLE
    assert naive_bucket_ids(2, 3, "product", 1.9) == WORKED_TABLE


@pytest.mark.parametrize(
    "ratio, product, side", [(1.9, 49, 7), (2.0, 81, 9), (2.5, 121, 11), (3.0, 169, 13)]
)
def test_bucket_counts(ratio, product, side):
    assert num_buckets("product", ratio) == product
    assert num_buckets("product", ratio, skip=1) == product + 1
    assert num_buckets("product", ratio, skip=3) == product + 1
    for method in ("euc", "quant", "cross", "cross_rows", "cross_cols"):
        assert num_buckets(method, ratio) == side == 2 * BETA_INT[ratio] + 1
        assert num_buckets(method, ratio, skip=1) == side + 1
    # every id lies in [0, num_buckets), the skip id being the last one
    for method in SPATIAL_METHODS:
        for skip in (0, 1):
            ids = bucket_ids(6, 5, method, ratio, skip=skip)
            assert ids.min() >= 0 and ids.max() < num_buckets(method, ratio, skip)
    # a 20 x 20 product grid at these ratios uses every one of the S^2 buckets
    ids = bucket_ids(20, 20, "product", ratio)
    assert ids.unique().numel() == product


def test_deit_counts_used_and_allocated():
    """Section 2.2's check: Cream's DeiT names on a 14 x 14 grid plus cls (skip 1)."""

    def used(method, ratio):
        return bucket_ids(14, 14, method, ratio, skip=1).unique().numel()

    # ctx_euc_20: ratio 20, 19 + 1 used, 82 allocated
    assert used("euc", 20) == 19 + 1
    assert IRPE(8, mode="ctx", method="euc", ratio=20, skip=1).num_buckets == 82
    # ctx_quant_51: ratio 33, 50 + 1 used, 134 allocated
    assert used("quant", 33) == 50 + 1
    assert IRPE(8, mode="ctx", method="quant", ratio=33, skip=1).num_buckets == 134
    # ctx_cross_56: ratio 20, (27 + 1) + (27 + 1) used, 2 x 82 allocated
    assert used("cross_rows", 20) == 27 + 1 and used("cross_cols", 20) == 27 + 1
    cross = IRPECross(8, mode="ctx", ratio=20, skip=1)
    assert cross.rp_rows.num_buckets == cross.rp_cols.num_buckets == 82
    assert cross.rp_rows.lookup_table_weight.shape[-1] == 82
    # ctx_product_50: ratio 1.9, 49 + 1 used, 50 allocated
    assert used("product", 1.9) == 49 + 1
    assert IRPE(8, mode="ctx", method="product", ratio=1.9, skip=1).num_buckets == 50
    # the squared distance at ratio 33 goes far beyond alpha: the naive reference agrees
    assert bucket_ids(14, 14, "quant", 33).tolist() == naive_bucket_ids(14, 14, "quant", 33)


@pytest.mark.parametrize("ratio", [1.9, 2.0])
def test_symmetries_and_centres(ratio):
    beta_int = BETA_INT[ratio]
    side = 2 * beta_int + 1
    for hw in ((2, 3), (5, 7), (4, 4)):
        product = bucket_ids(*hw, "product", ratio)
        assert torch.equal(product.T, side * side - 1 - product)
        assert (product.diagonal() == beta_int * side + beta_int).all()
        for method in ("euc", "quant"):
            ids = bucket_ids(*hw, method, ratio)
            assert torch.equal(ids.T, ids)
            assert (ids.diagonal() == beta_int).all()
            assert ids.min() >= beta_int and ids.max() <= 2 * beta_int
        for method in ("cross_rows", "cross_cols"):
            ids = bucket_ids(*hw, method, ratio)
            assert torch.equal(ids.T, 2 * beta_int - ids)
            assert (ids.diagonal() == beta_int).all()
    assert bucket_ids(3, 3, "product", 1.9).diagonal().unique().tolist() == [24]
    assert bucket_ids(3, 3, "product", 2.0).diagonal().unique().tolist() == [40]


@pytest.mark.parametrize("skip", [1, 2])
@pytest.mark.parametrize("method", SPATIAL_METHODS)
def test_skip_rows_and_columns_hold_the_last_id(method, skip):
    ratio = 2.0
    plain = bucket_ids(3, 4, method, ratio)
    ids = bucket_ids(3, 4, method, ratio, skip=skip)
    last = num_buckets(method, ratio)
    assert last == num_buckets(method, ratio, skip) - 1
    assert ids.shape == (skip + 12, skip + 12)
    assert (ids[:skip, :] == last).all() and (ids[:, :skip] == last).all()
    assert torch.equal(ids[skip:, skip:], plain)
    assert (plain < last).all()
    # the cached no-skip table was not modified by the padding
    assert torch.equal(bucket_ids(3, 4, method, ratio), plain)


@pytest.mark.parametrize(
    "hw, ratio, skip",
    [((2, 3), 1.9, 0), ((4, 5), 2.0, 1), ((7, 3), 2.5, 0), ((5, 7), 3.0, 2), ((6, 6), 0.9, 0)],
)
def test_bucket_ids_equal_naive_reference(hw, ratio, skip):
    for method in SPATIAL_METHODS:
        got = bucket_ids(*hw, method, ratio, skip=skip).tolist()
        assert got == naive_bucket_ids(*hw, method, ratio, skip), (method, hw, ratio)


# ---------------------------------------------------------------------------------------------
# 2. cache and spec
# ---------------------------------------------------------------------------------------------
def _direct(height, width, method, ratio):
    """Ids computed from scratch: an empty cache computes exactly the requested grid."""
    clear_bucket_cache()
    ids = bucket_ids(height, width, method, ratio).clone()
    clear_bucket_cache()
    return ids


@pytest.fixture
def count_direct(monkeypatch):
    """Records (H, W, method, device) of every grid the cache computes; computes it on CPU
    and moves it to the requested device (so "meta" works)."""
    calls = []
    direct = irpe._bucket_ids_direct

    def counting(height, width, method, ratio, device=None):
        calls.append((height, width, method, torch.device(device).type))
        return direct(height, width, method, ratio, "cpu").to(device)

    monkeypatch.setattr(irpe, "_bucket_ids_direct", counting)
    return calls


@pytest.mark.parametrize("method", SPATIAL_METHODS)
def test_cache_crops_equal_direct_computation(method, count_direct):
    ratio = 2.0
    big = bucket_ids(7, 5, method, ratio).clone()  # non-square first
    assert count_direct == [(7, 5, method, "cpu")]
    crops = {(h, w): bucket_ids(h, w, method, ratio).clone()
             for h in range(1, 8) for w in range(1, 6)}  # fmt: skip
    assert len(count_direct) == 1  # every crop came from the 7 x 5 grid
    assert torch.equal(crops[(7, 5)], big)
    for (h, w), ids in crops.items():
        assert ids.shape == (h * w, h * w)
        assert torch.equal(ids, _direct(h, w, method, ratio)), (h, w)


def test_cache_grows_for_transposed_grids(count_direct):
    ratio = 1.9
    a = bucket_ids(3, 6, "product", ratio).clone()
    b = bucket_ids(6, 3, "product", ratio).clone()  # not a crop of 3 x 6: the base grows to 6 x 6
    assert [call[:2] for call in count_direct] == [(3, 6), (6, 6)]
    wide = bucket_ids(2, 7, "product", ratio).clone()  # lower but wider: grows to 6 x 7
    assert [call[:2] for call in count_direct] == [(3, 6), (6, 6), (6, 7)]
    assert a.shape == b.shape == (18, 18)
    assert not torch.equal(a, b)
    assert torch.equal(bucket_ids(3, 6, "product", ratio), a)  # cached entry kept
    later = {hw: bucket_ids(*hw, "product", ratio).clone() for hw in ((2, 5), (5, 2), (6, 6))}
    assert len(count_direct) == 3
    assert torch.equal(wide, _direct(2, 7, "product", ratio))
    assert torch.equal(a, _direct(3, 6, "product", ratio))
    assert torch.equal(b, _direct(6, 3, "product", ratio))
    for hw, ids in later.items():
        assert torch.equal(ids, _direct(*hw, "product", ratio)), hw
    assert a.tolist() == naive_bucket_ids(3, 6, "product", ratio)
    assert b.tolist() == naive_bucket_ids(6, 3, "product", ratio)


def test_cache_key_has_device_method_and_ratio(count_direct):
    cpu = bucket_ids(3, 4, "product", 2.0, "cpu")
    assert bucket_ids(3, 4, "product", 2.0, torch.device("cpu")) is cpu
    assert bucket_ids(3, 4, "product", 2.0) is cpu  # None means cpu
    assert bucket_ids(3, 4, "product", 2, "cpu") is cpu  # int ratio, same key
    assert len(count_direct) == 1
    meta = bucket_ids(3, 4, "product", 2.0, "meta")
    assert meta.device.type == "meta" and meta.shape == (12, 12)
    assert count_direct[-1] == (3, 4, "product", "meta")
    assert bucket_ids(2, 2, "product", 2.0, "meta").device.type == "meta"
    assert bucket_ids(3, 4, "product", 2.0, "cpu") is cpu
    assert bucket_ids(2, 2, "product", 2.0, "cpu").device.type == "cpu"
    n = len(count_direct)
    assert not torch.equal(bucket_ids(3, 4, "product", 2.5, "cpu"), cpu)  # another ratio
    assert not torch.equal(bucket_ids(3, 4, "euc", 2.0, "cpu"), cpu)  # another method
    assert len(count_direct) == n + 2


@pytest.mark.parametrize("skip", [0, 1, 2])
def test_length_check(skip):
    x = torch.zeros(1, 2, skip + 12, 4)
    for module in (
        IRPE(4, 2, mode="ctx", method="product", ratio=2.0, skip=skip),
        IRPE(4, 2, mode="bias", method="euc", ratio=2.0, skip=skip),
        IRPECross(4, 2, mode="ctx", ratio=2.0, skip=skip),
    ):
        assert module(x, (3, 4)).shape[-2:] == (skip + 12, skip + 12)
        assert module(x, (4, 3)).shape[-2:] == (skip + 12, skip + 12)
        for hw in ((3, 5), (2, 4), (12, 2)):
            with pytest.raises(ValueError) as excinfo:
                module(x, hw)
            message = _one_line_value_error(excinfo)
            for part in (f"L={skip + 12}", f"H={hw[0]}", f"W={hw[1]}", f"skip={skip}"):
                assert part in message, message
    v = IRPE(4, 2, mode="ctx", method="product", ratio=2.0, transposed=False, skip=skip)
    attn = torch.zeros(1, 2, skip + 12, skip + 12)
    assert v(attn, (3, 4)).shape == (1, 2, skip + 12, 4)
    with pytest.raises(ValueError, match=f"L={skip + 12}") as excinfo:
        v(attn, (3, 3))
    _one_line_value_error(excinfo)


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("rpe-2.0-product-ctx-1-k", "rpe-2.0-product-ctx-1-k"),
        ("rpe-1.9-product-ctx-1-qkv", "rpe-1.9-product-ctx-1-qkv"),
        ("rpe-2-euc-bias-0-kq", "rpe-2.0-euc-bias-0-qk"),
        ("rpe-1.90-quant-ctx-0-vkq", "rpe-1.9-quant-ctx-0-qkv"),
        ("rpe-20-cross-ctx-1-vk", "rpe-20.0-cross-ctx-1-kv"),
        ("rpe-0.5-product-bias-1-q", "rpe-0.5-product-bias-1-q"),
        ("rpe-3e0-euc-ctx-0-vq", "rpe-3.0-euc-ctx-0-qv"),
    ],
)
def test_spec_round_trip(text, canonical):
    spec = parse_rpe_spec(text)
    assert isinstance(spec, RPESpec)
    assert str(spec) == canonical
    assert parse_rpe_spec(str(spec)) == spec
    assert str(parse_rpe_spec(str(spec))) == canonical
    assert isinstance(spec.ratio, float) and isinstance(spec.shared_head, bool)
    assert parse_rpe_spec(spec) is spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.ratio = 1.0


def test_spec_fields_and_none():
    assert parse_rpe_spec(None) is None
    spec = parse_rpe_spec("rpe-2.0-product-ctx-1-k")
    assert spec == RPESpec(ratio=2.0, method="product", mode="ctx", shared_head=True, rpe_on="k")
    spec = parse_rpe_spec("rpe-1.9-cross-bias-0-kq")
    assert (spec.ratio, spec.method, spec.mode, spec.shared_head, spec.rpe_on) == (
        1.9, "cross", "bias", False, "qk")  # fmt: skip


SPEC_FIELDS = "rpe-{ratio}-{method}-{mode}-{shared_head}-{rpe_on}"
BAD_SPECS = [
    ("rpe-2.0-product-ctx-1", re.escape(f"expected 6 fields {SPEC_FIELDS}, got 5")),
    ("rpe-2.0-product-ctx-1-k-v", re.escape(f"expected 6 fields {SPEC_FIELDS}, got 7")),
    ("rpe--1-product-ctx-1-k", "expected 6 fields .*, got 7"),
    ("irpe-2.0-product-ctx-1-k", "first field 'irpe'"),
    ("rpe-0-product-ctx-1-k", "ratio '0'.*allowed: a positive float"),
    ("rpe-0.0-product-ctx-1-k", "ratio '0.0'.*allowed: a positive float"),
    ("rpe-abc-product-ctx-1-k", "ratio 'abc'.*allowed: a positive float"),
    ("rpe-nan-product-ctx-1-k", "ratio 'nan'.*allowed: a positive float"),
    ("rpe-inf-product-ctx-1-k", "ratio 'inf'.*allowed: a positive float"),
    ("rpe-2_0-product-ctx-1-k", "ratio '2_0'.*allowed: a positive float"),
    ("rpe- 2.0-product-ctx-1-k", "ratio ' 2.0'.*allowed: a positive float"),
    ("rpe--product-ctx-1-k", "ratio ''.*allowed: a positive float"),
    ("rpe-2.0-Product-ctx-1-k", "method 'Product'.*allowed: euc, quant, cross, product"),
    ("rpe-2.0-prod-ctx-1-k", "method 'prod'.*allowed: euc, quant, cross, product"),
    ("rpe-2.0-cross_rows-ctx-1-k", "method 'cross_rows'.*allowed: euc, quant, cross, product"),
    ("rpe-2.0-product-context-1-k", "mode 'context'.*allowed: bias, ctx"),
    ("rpe-2.0-product-CTX-1-k", "mode 'CTX'.*allowed: bias, ctx"),
    ("rpe-2.0-product-ctx-2-k", "shared_head '2'.*allowed: 0.*1"),
    ("rpe-2.0-product-ctx-true-k", "shared_head 'true'.*allowed: 0.*1"),
    ("rpe-2.0-product-ctx--k", "shared_head ''.*allowed: 0.*1"),
    (
        "rpe-2.0-product-ctx-1-",
        "rpe_on ''.*allowed: non-empty letters from q, k, v, each at most once",
    ),
    ("rpe-2.0-product-ctx-1-x", "rpe_on 'x'.*allowed: non-empty letters from q, k, v"),
    ("rpe-2.0-product-ctx-1-kx", "rpe_on 'kx'.*allowed: non-empty letters from q, k, v"),
    ("rpe-2.0-product-ctx-1-K", "rpe_on 'K'.*allowed: non-empty letters from q, k, v"),
    ("rpe-2.0-product-ctx-1-kk", "rpe_on 'kk'.*each at most once"),
    ("rpe-2.0-product-bias-1-kv", "mode bias cannot be used on v; use ctx or drop v"),
    ("rpe-2.0-euc-bias-0-v", "mode bias cannot be used on v; use ctx or drop v"),
    ("", re.escape("use None (null on the command line) to disable iRPE")),
]


@pytest.mark.parametrize("text, pattern", BAD_SPECS)
def test_spec_errors_are_one_line_naming_the_field(text, pattern):
    with pytest.raises(ValueError, match=pattern) as excinfo:
        parse_rpe_spec(text)
    message = _one_line_value_error(excinfo)
    assert message.startswith(f"invalid iRPE spec {text!r}: "), message
    # build_rpe fails the same way
    with pytest.raises(ValueError, match=pattern):
        build_rpe(text, head_dim=8, num_heads=2)


def test_spec_error_messages_stay_one_line_with_odd_characters():
    for text in ("rpe-2.0-product-ctx-1-k\n", "rpe-2.0-prod\nuct-ctx-1-k", 2.0):
        with pytest.raises(ValueError) as excinfo:
            parse_rpe_spec(text)
        _one_line_value_error(excinfo)


# ---------------------------------------------------------------------------------------------
# 3. fast == naive
# ---------------------------------------------------------------------------------------------
B, HEADS, GRID, D = 2, 8, (5, 7), 6  # L = 35, product ratio 2.0: nb = 81
L = GRID[0] * GRID[1]


def _randn(*shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def _fill_random(module, seed):
    for k, p in enumerate(module.parameters()):
        with torch.no_grad():
            p.copy_(_randn(*p.shape, seed=seed + k, dtype=p.dtype))
    return module


def _grads(out, inputs, seed):
    upstream = _randn(*out.shape, seed=seed, dtype=out.dtype)
    return torch.autograd.grad((out * upstream).sum(), inputs)


def _assert_close_all(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shared_head", [True, False])
def test_qk_ctx_gather_equals_flat_index_reference(shared_head):
    module = IRPE(D, HEADS, mode="ctx", method="product", ratio=2.0, shared_head=shared_head)
    module = _fill_random(module.double(), seed=1)
    assert module.num_buckets == 81
    table = module.lookup_table_weight
    assert table.shape == ((1 if shared_head else HEADS), D, 81)
    x = _randn(B, HEADS, L, D, seed=2).requires_grad_()
    ids = bucket_ids(*GRID, "product", 2.0)
    out = module(x, GRID)
    ref = irpe_qk_term_reference(x, table, ids)
    assert out.shape == ref.shape == (B, HEADS, L, L)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert out.abs().max() > 1  # not trivially zero
    _assert_close_all(_grads(out, (x, table), 3), _grads(ref, (x, table), 3))
    # one element by hand: out[b, h, i, j] = x[b, h, i] . W[h', :, b(i, j)]
    b, h, i, j = 1, 5, 33, 2
    hp = 0 if shared_head else h
    expected = (x[b, h, i] * table[hp, :, ids[i, j]]).sum()
    torch.testing.assert_close(out[b, h, i, j], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shared_head", [True, False])
@pytest.mark.parametrize("mode", ["ctx", "bias"])
def test_add_irpe_logits_q_transposed_and_k(mode, shared_head):
    """Both uses: the k-term at b(i, j) on scaled q, the q-term at b(j, i) on scaled k."""
    kwargs = {"mode": mode, "method": "product", "ratio": 2.0, "shared_head": shared_head}
    rpe_q = _fill_random(IRPE(D, HEADS, **kwargs).double(), seed=10)
    rpe_k = _fill_random(IRPE(D, HEADS, **kwargs).double(), seed=20)
    (table_q,), (table_k,) = list(rpe_q.parameters()), list(rpe_k.parameters())
    q = _randn(B, HEADS, L, D, seed=30).requires_grad_()
    k = _randn(B, HEADS, L, D, seed=31).requires_grad_()
    logits = _randn(B, HEADS, L, L, seed=32).requires_grad_()
    ids = bucket_ids(*GRID, "product", 2.0)
    assert not torch.equal(ids, ids.T)  # the transpose matters on this grid
    out = add_irpe_logits(logits, q, k, rpe_q, rpe_k, GRID)
    if mode == "ctx":
        term_k = irpe_qk_term_reference(q, table_k, ids)
        term_q = irpe_qk_term_reference(k, table_q, ids).transpose(-2, -1)
    else:
        assert table_q.shape == ((1 if shared_head else HEADS), 81)
        lk, lq, lids = table_k.tolist(), table_q.tolist(), ids.tolist()
        term_k = torch.tensor(
            [[[lk[h][lids[i][j]] for j in range(L)] for i in range(L)] for h in range(len(lk))],
            dtype=torch.float64,
        )
        term_q = torch.tensor(
            [[[lq[h][lids[j][i]] for j in range(L)] for i in range(L)] for h in range(len(lq))],
            dtype=torch.float64,
        )
        assert rpe_k(q, GRID).shape == (table_k.shape[0], L, L)  # broadcast over the batch
    expected = logits + term_k + term_q
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    inputs = (logits, q, k, table_q, table_k) if mode == "ctx" else (logits, table_q, table_k)
    if mode == "bias":
        expected = logits + table_k[:, ids] + table_q[:, ids].transpose(-2, -1)
    _assert_close_all(_grads(out, inputs, 33), _grads(expected, inputs, 33))
    # each alone
    only_k = add_irpe_logits(logits, q, k, None, rpe_k, GRID)
    torch.testing.assert_close(only_k, logits + term_k.detach(), rtol=1e-12, atol=1e-12)
    only_q = add_irpe_logits(logits, q, k, rpe_q, None, GRID)
    torch.testing.assert_close(only_q, logits + term_q.detach(), rtol=1e-12, atol=1e-12)
    assert add_irpe_logits(logits, q, k, None, None, GRID) is logits


@pytest.mark.parametrize("shared_head", [True, False])
def test_v_scatter_equals_materialized_reference(shared_head):
    module = IRPE(D, HEADS, mode="ctx", method="product", ratio=2.0, transposed=False,
                  shared_head=shared_head)  # fmt: skip
    module = _fill_random(module.double(), seed=40)
    table = module.lookup_table_weight
    assert table.shape == ((1 if shared_head else HEADS), 81, D)
    attn = _randn(B, HEADS, L, L, seed=41).softmax(-1).requires_grad_()
    ids = bucket_ids(*GRID, "product", 2.0)
    out = module(attn, GRID)
    ref = irpe_v_term_reference(attn, table, ids)
    assert out.shape == ref.shape == (B, HEADS, L, D)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    _assert_close_all(_grads(out, (attn, table), 42), _grads(ref, (attn, table), 42))
    b, h, i = 0, 3, 17
    hp = 0 if shared_head else h
    expected = sum(attn[b, h, i, j] * table[hp, ids[i, j]] for j in range(L))
    torch.testing.assert_close(out[b, h, i], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode, transposed", [("ctx", True), ("bias", True), ("ctx", False)])
def test_cross_is_the_sum_of_its_two_tables(mode, transposed):
    skip, hw = 1, (3, 4)
    length = skip + 12
    cross = _fill_random(
        IRPECross(D, HEADS, mode=mode, ratio=1.9, transposed=transposed, shared_head=False,
                  skip=skip).double(), seed=50)  # fmt: skip
    rows_table = next(cross.rp_rows.parameters())
    cols_table = next(cross.rp_cols.parameters())
    rows_ids = bucket_ids(*hw, "cross_rows", 1.9, skip=skip)
    cols_ids = bucket_ids(*hw, "cross_cols", 1.9, skip=skip)
    if transposed:
        x = _randn(B, HEADS, length, D, seed=51).requires_grad_()
    else:
        x = _randn(B, HEADS, length, length, seed=51).softmax(-1).requires_grad_()
    out = cross(x, hw)
    if mode == "bias":
        expected = rows_table[:, rows_ids] + cols_table[:, cols_ids]
    elif transposed:
        expected = irpe_qk_term_reference(x, rows_table, rows_ids) + irpe_qk_term_reference(
            x, cols_table, cols_ids
        )
    else:
        expected = irpe_v_term_reference(x, rows_table, rows_ids) + irpe_v_term_reference(
            x, cols_table, cols_ids
        )
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, cross.rp_rows(x, hw) + cross.rp_cols(x, hw), rtol=0, atol=0)
    inputs = (x, rows_table, cols_table) if mode == "ctx" else (rows_table, cols_table)
    _assert_close_all(_grads(out, inputs, 52), _grads(expected, inputs, 52))


@pytest.mark.parametrize("method, ratio", [("product", 1.9), ("euc", 1.0), ("cross", 1.0)])
def test_terms_equal_a_per_pair_loop(method, ratio):
    """The references (and the fast terms) against a plain loop over (b, h, i, j) with the
    naive bucket ids, skip 1 and per-head tables:
    logits_ij += q_i . Wk[b(i,j)] + k_j . Wq[b(j,i)];  out_i += sum_j a_ij Wv[b(i,j)]."""
    nb_, nh, dim, skip, hw = 1, 2, 3, 1, (2, 3)
    length = skip + hw[0] * hw[1]
    spec = f"rpe-{ratio}-{method}-ctx-0-qkv"
    rpe_q, rpe_k, rpe_v = (
        _fill_random(m.double(), seed=60 + 10 * n)
        for n, m in enumerate(build_rpe(spec, dim, nh, skip=skip))
    )
    if method == "cross":
        parts = ("cross_rows", "cross_cols")
        tables = {
            name: [m.rp_rows.lookup_table_weight, m.rp_cols.lookup_table_weight]
            for name, m in (("q", rpe_q), ("k", rpe_k), ("v", rpe_v))
        }
    else:
        parts = (method,)
        tables = {
            name: [m.lookup_table_weight] for name, m in (("q", rpe_q), ("k", rpe_k), ("v", rpe_v))
        }
    tables = {name: [t.detach() for t in ts] for name, ts in tables.items()}
    ids = [naive_bucket_ids(*hw, part, ratio, skip) for part in parts]
    q = _randn(nb_, nh, length, dim, seed=70)
    k = _randn(nb_, nh, length, dim, seed=71)
    attn = _randn(nb_, nh, length, length, seed=72).softmax(-1)
    base = _randn(nb_, nh, length, length, seed=73)

    logits = base.clone()
    out_v = torch.zeros(nb_, nh, length, dim, dtype=torch.float64)
    for b in range(nb_):
        for h in range(nh):
            for i in range(length):
                for j in range(length):
                    for t, part_ids in enumerate(ids):
                        wk, wq, wv = tables["k"][t], tables["q"][t], tables["v"][t]
                        logits[b, h, i, j] += float(q[b, h, i] @ wk[h, :, part_ids[i][j]])
                        logits[b, h, i, j] += float(k[b, h, j] @ wq[h, :, part_ids[j][i]])
                        out_v[b, h, i] += float(attn[b, h, i, j]) * wv[h, part_ids[i][j]]
    with torch.no_grad():
        fast = add_irpe_logits(base, q, k, rpe_q, rpe_k, hw)
        torch.testing.assert_close(fast, logits, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rpe_v(attn, hw), out_v, rtol=1e-12, atol=1e-12)
        ref_logits, ref_v = base.clone(), torch.zeros_like(out_v)
        for t, part in enumerate(parts):
            part_ids = bucket_ids(*hw, part, ratio, skip=skip)
            assert part_ids.tolist() == ids[t]
            ref_logits += irpe_qk_term_reference(q, tables["k"][t], part_ids)
            ref_logits += irpe_qk_term_reference(k, tables["q"][t], part_ids).transpose(-2, -1)
            ref_v += irpe_v_term_reference(attn, tables["v"][t], part_ids)
        torch.testing.assert_close(ref_logits, logits, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ref_v, out_v, rtol=1e-12, atol=1e-12)


def test_v_term_bfloat16_close_to_float32():
    """bf16 attention (many small weights per bucket on a 20 x 20 grid): the per-bucket sums are
    accumulated in fp32, so the result stays within bf16 rounding of the fp32 one."""
    hw, heads, dim = (20, 20), 2, 8
    length = hw[0] * hw[1]
    module = IRPE(dim, heads, mode="ctx", method="product", ratio=2.0, transposed=False,
                  shared_head=False)  # fmt: skip
    with torch.no_grad():
        g = torch.Generator().manual_seed(80)
        module.lookup_table_weight.copy_(torch.rand(heads, 81, dim, generator=g) + 0.5)
    logits = torch.randn(1, heads, length, length, generator=g) * 0.5
    attn = logits.softmax(-1)
    out32 = module(attn, hw)
    out16 = module(attn.bfloat16(), hw)
    assert out16.dtype == torch.bfloat16
    ref = irpe_v_term_reference(attn.double(), module.lookup_table_weight.double(),
                                bucket_ids(*hw, "product", 2.0))  # fmt: skip
    torch.testing.assert_close(out32.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out16.double(), ref, rtol=2e-2, atol=1e-3)
    # gradients flow to the fp32 table through the bf16 path
    out16.float().sum().backward()
    grad = module.lookup_table_weight.grad
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# 4. names, shapes, init
# ---------------------------------------------------------------------------------------------
class _Attention(nn.Module):
    def __init__(self, spec, head_dim, num_heads, skip=0):
        super().__init__()
        self.rpe_q, self.rpe_k, self.rpe_v = build_rpe(spec, head_dim, num_heads, skip=skip)


@pytest.mark.parametrize(
    "spec, skip, expected",
    [
        ("rpe-2.0-product-ctx-1-k", 0, {"rpe_k.lookup_table_weight": (1, 32, 81)}),
        ("rpe-1.9-product-ctx-1-k", 1, {"rpe_k.lookup_table_weight": (1, 32, 50)}),
        (
            "rpe-1.9-euc-bias-0-qk",
            1,
            {"rpe_q.lookup_table_bias": (8, 8), "rpe_k.lookup_table_bias": (8, 8)},
        ),
        (
            "rpe-2.0-quant-ctx-0-qkv",
            0,
            {
                "rpe_q.lookup_table_weight": (8, 32, 9),
                "rpe_k.lookup_table_weight": (8, 32, 9),
                "rpe_v.lookup_table_weight": (8, 9, 32),
            },
        ),
        (
            "rpe-2.0-cross-ctx-1-kv",
            1,
            {
                "rpe_k.rp_rows.lookup_table_weight": (1, 32, 10),
                "rpe_k.rp_cols.lookup_table_weight": (1, 32, 10),
                "rpe_v.rp_rows.lookup_table_weight": (1, 10, 32),
                "rpe_v.rp_cols.lookup_table_weight": (1, 10, 32),
            },
        ),
        (
            "rpe-3.0-cross-bias-0-q",
            0,
            {
                "rpe_q.rp_rows.lookup_table_bias": (8, 13),
                "rpe_q.rp_cols.lookup_table_bias": (8, 13),
            },
        ),
        ("rpe-2.0-product-bias-1-k", 0, {"rpe_k.lookup_table_bias": (1, 81)}),
    ],
)
def test_build_rpe_names_shapes_zero_init(spec, skip, expected):
    attn = _Attention(spec, head_dim=32, num_heads=8, skip=skip)
    state = attn.state_dict()
    assert {key: tuple(t.shape) for key, t in state.items()} == expected
    for letter in "qkv":
        module = getattr(attn, f"rpe_{letter}")
        assert (module is None) == (letter not in parse_rpe_spec(spec).rpe_on)
        if module is not None:
            assert isinstance(module, IRPECross if "cross" in spec else IRPE)
            assert all(isinstance(m, (IRPE, IRPECross)) for m in module.modules())
    for value in state.values():
        assert value.dtype == torch.float32 and (value == 0).all()
    assert sum(p.numel() for p in attn.parameters()) == sum(math.prod(s) for s in expected.values())
    # reset_parameters zeros again after a random fill
    for module in (attn.rpe_q, attn.rpe_k, attn.rpe_v):
        if module is not None:
            _fill_random(module, seed=90)
            assert any((p != 0).any() for p in module.parameters())
            module.reset_parameters()
            assert all((p == 0).all() for p in module.parameters())


def test_build_rpe_none_and_zero_output():
    assert build_rpe(None, 32, 8) == (None, None, None)
    _, rpe_k, _ = build_rpe("rpe-2.0-product-ctx-1-k", 4, 2)
    assert rpe_k.ratio == 2.0 and rpe_k.method == "product" and rpe_k.transposed
    assert rpe_k.num_buckets == 81 and rpe_k.skip == 0 and rpe_k.shared_head
    x = torch.randn(1, 2, 6, 4)
    out = rpe_k(x, (2, 3))
    assert out.shape == (1, 2, 6, 6) and (out == 0).all()


def test_irpe_rejects_bias_on_v_and_unknown_mode():
    with pytest.raises(ValueError, match="bias cannot be used on v") as excinfo:
        IRPE(8, 2, mode="bias", transposed=False)
    _one_line_value_error(excinfo)
    with pytest.raises(ValueError, match="bias cannot be used on v"):
        IRPECross(8, 2, mode="bias", transposed=False)
    with pytest.raises(ValueError, match="mode 'context'") as excinfo:
        IRPE(8, 2, mode="context")
    _one_line_value_error(excinfo)
