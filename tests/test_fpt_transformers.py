"""ST, GT (global and local) and RT against their formulas, written out explicitly here."""

import pytest
import torch
import torch.nn.functional as F

from fpt.modeling import GroundingTransformer, RenderingTransformer, SelfTransformer

C = 8


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # module weights: every comparison below runs on fixed numbers


def _map(*size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*size, generator=g).requires_grad_()


def _projections(attention, query_map, key_map):
    """q, k, v maps and pi, from the module's own weights and the paper's definitions."""
    q = F.conv2d(query_map, attention.query.weight, attention.query.bias)
    k = F.conv2d(key_map, attention.key.weight, attention.key.bias)
    v = F.conv2d(key_map, attention.value.weight, attention.value.bias)
    pi = torch.softmax(k.mean(dim=(2, 3)) @ attention.mixture.proj.weight.t(), dim=-1)
    return q, k, v, pi


def _formula(q, k, v, pi, similarity):
    """sum_n pi_n softmax_j(s^n_ij / sqrt(d)) v_j for (B, Ci, L), (B, Ci, S), (B, C, S)."""
    parts = pi.shape[1]
    d = q.shape[1] // parts
    qn, kn = q.unflatten(1, (parts, d)), k.unflatten(1, (parts, d))  # (B, N, d, L|S)
    if similarity == "dot":
        s = torch.einsum("bndl,bnds->bnls", qn, kn)
    else:
        s = -((qn.unsqueeze(-1) - kn.unsqueeze(-2)) ** 2).sum(2)
    w = (pi[:, :, None, None] * torch.softmax(s / d**0.5, dim=-1)).sum(1)  # (B, L, S)
    return torch.einsum("bls,bcs->bcl", w, v)


def _check_forward_and_grads(module, inputs, reference):
    """module(*inputs) == reference(*inputs), and so are the gradients of inputs and weights."""
    out = module(*inputs)
    ref = reference(*inputs)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    tensors = list(inputs) + list(module.parameters())
    grads = torch.autograd.grad(out, tensors, grad)
    ref_grads = torch.autograd.grad(ref, tensors, grad, allow_unused=True)
    for t, g, r in zip(tensors, grads, ref_grads):
        assert g is not None and g.abs().sum() > 0, "no gradient reaches a parameter"
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["sdpa", "chunked", "naive"])
@pytest.mark.parametrize("size", [(5, 7), (9, 11)])
def test_self_transformer(impl, size):
    st = SelfTransformer(C, num_parts=2, impl=impl, chunk_size=64)

    def reference(x):
        q, k, v, pi = _projections(st.attention, x, x)
        return _formula(q.flatten(2), k.flatten(2), v.flatten(2), pi, "dot").view_as(x)

    _check_forward_and_grads(st, [_map(2, C, *size)], reference)


def test_self_transformer_kv_pool():
    st = SelfTransformer(C, kv_pool=2)
    x = _map(1, C, 7, 9)

    def reference(x):
        pooled = F.avg_pool2d(x, 2, 2, ceil_mode=True)  # 4 x 5 keys
        q, k, v, pi = _projections(st.attention, x, pooled)
        return _formula(q.flatten(2), k.flatten(2), v.flatten(2), pi, "dot").view_as(x)

    _check_forward_and_grads(st, [x], reference)


@pytest.mark.parametrize("similarity", ["euclidean", "dot"])
@pytest.mark.parametrize("impl", ["sdpa", "chunked"])
def test_grounding_transformer_global(similarity, impl):
    gt = GroundingTransformer(C, num_parts=4, similarity=similarity, impl=impl, chunk_size=50)
    fine, coarse = _map(2, C, 10, 14), _map(2, C, 5, 7, seed=1)

    def reference(fine, coarse):
        q, k, v, pi = _projections(gt.attention, fine, coarse)
        out = _formula(q.flatten(2), k.flatten(2), v.flatten(2), pi, similarity)
        return out.view_as(fine)

    _check_forward_and_grads(gt, [fine, coarse], reference)


@pytest.mark.parametrize(
    "fine_size,coarse_size,ratio,window",
    [
        ((8, 10), (4, 5), 2, 3),
        ((7, 9), (4, 5), 2, 3),
        ((13, 10), (4, 3), 4, 5),
        ((6, 6), (3, 3), 2, 7),
    ],
)
@pytest.mark.parametrize("impl", ["sdpa", "naive"])  # local GT: "sdpa" runs the chunked kernel
def test_grounding_transformer_local(fine_size, coarse_size, ratio, window, impl):
    """Each fine (i, j) attends to the window x window coarse square centred at
    (i // ratio, j // ratio); positions outside the coarse map are zero keys and values."""
    gt = GroundingTransformer(C, mode="local", window=window, ratio=ratio, impl=impl)
    fine, coarse = _map(2, C, *fine_size), _map(2, C, *coarse_size, seed=1)
    r = window // 2

    def reference(fine, coarse):
        q, k, v, pi = _projections(gt.attention, fine, coarse)
        k, v = F.pad(k, (r, r, r, r)), F.pad(v, (r, r, r, r))
        rows = []
        for i in range(fine_size[0]):
            row = []
            for j in range(fine_size[1]):
                ci, cj = i // ratio, j // ratio  # centre, in padded coordinates + r
                kw = k[:, :, ci : ci + window, cj : cj + window].flatten(2)
                vw = v[:, :, ci : ci + window, cj : cj + window].flatten(2)
                row.append(_formula(q[:, :, i, j, None], kw, vw, pi, "euclidean")[..., 0])
            rows.append(torch.stack(row, -1))
        return torch.stack(rows, -2)

    _check_forward_and_grads(gt, [fine, coarse], reference)


def test_local_grounding_rejects_mismatched_levels():
    gt = GroundingTransformer(C, mode="local", ratio=2)
    with pytest.raises(ValueError, match="do not differ by ratio=2"):
        gt(torch.randn(1, C, 8, 8), torch.randn(1, C, 3, 4))


@pytest.mark.parametrize("ratio,fine_size", [(2, (50, 84)), (4, (13, 21)), (8, (200, 336))])
def test_rendering_transformer(ratio, fine_size):
    rt = RenderingTransformer(C, ratio=ratio)
    assert len(rt.value_down) == {2: 1, 4: 2, 8: 3}[ratio]  # log2(ratio) stride-2 convs
    coarse_size = fine_size
    for _ in range(len(rt.value_down)):
        coarse_size = tuple((s + 1) // 2 for s in coarse_size)
    coarse, fine = _map(2, C, *coarse_size), _map(2, C, *fine_size, seed=1)

    def reference(coarse, fine):
        w = F.relu(
            F.conv2d(
                fine.mean(dim=(2, 3), keepdim=True),
                rt.channel_weight.weight,
                rt.channel_weight.bias,
            )
        )
        q_att = coarse * w
        v_down = fine
        for n, conv in enumerate(rt.value_down):
            v_down = F.conv2d(v_down, conv.weight, conv.bias, stride=2, padding=1)
            v_down = F.relu(v_down) if n < len(rt.value_down) - 1 else v_down
        out = F.conv2d(q_att, rt.query_conv.weight, rt.query_conv.bias, padding=1) + v_down
        return F.relu(F.conv2d(out, rt.refine.weight, rt.refine.bias, padding=1))

    _check_forward_and_grads(rt, [coarse, fine], reference)


def test_bad_transformer_arguments():
    with pytest.raises(ValueError, match="ratio=3 must be a power of 2"):
        RenderingTransformer(C, ratio=3)
    with pytest.raises(ValueError, match="window=4 must be a positive odd"):
        GroundingTransformer(C, mode="local", window=4)
    with pytest.raises(ValueError, match="grounding mode='windowed'"):
        GroundingTransformer(C, mode="windowed")
    with pytest.raises(ValueError, match="inner_channels=8 must be divisible by num_parts=3"):
        SelfTransformer(C, num_parts=3)
