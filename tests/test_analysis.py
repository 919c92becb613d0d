"""Parameter/FLOP analysis (fvcore) of ViTDet models."""

import os
import sys

import pytest
from torch import nn

from detectron2.config import LazyConfig, instantiate

from fpt.modeling.vit import ViT, set_vit_attention_impl
from fpt.utils.analysis import analyze_model, format_complexity_table


@pytest.mark.parametrize("use_rel_pos", [False, True])
@pytest.mark.parametrize("impl", ["sdpa_folded", "sdpa_mask", "explicit"])
def test_vit_flops_match_formula(impl, use_rel_pos):
    C, p, depth, size, window = 16, 8, 2, 48, 4
    vit = ViT(
        img_size=size,
        patch_size=p,
        embed_dim=C,
        depth=depth,
        num_heads=2,
        use_abs_pos=False,
        norm_layer=lambda d: nn.Identity(),
        use_rel_pos=use_rel_pos,
        window_size=window,
        window_block_indexes=[0],
    )
    set_vit_attention_impl(vit, impl)
    s = size // p  # 6x6 tokens; block 0: 4 windows of 4x4 (padded to 8x8), block 1: global

    # fvcore: one multiply-add = one flop; element-wise ops are not counted. Attention: q k^T and
    # attn v, plus <q, Rh> and <q, Rw> (rel_h, rel_w) -- the model's math, however it is run
    # (the folded path's one-hot columns and zero padding are not counted).
    def block(n_tokens, side):
        attn = 2 * n_tokens * side * side * C + (2 * n_tokens * side * C if use_rel_pos else 0)
        # qkv and proj run on the (padded) window tokens, the MLP on the s x s grid
        return n_tokens * (3 * C * C + C * C) + s * s * 2 * C * 4 * C + attn

    blocks = block(4 * window * window, window) + block(s * s, s)
    result = analyze_model(vit, size, size)
    assert result["flops"]["total"] == s * s * C * 3 * p * p + blocks
    assert result["params"]["total"] == sum(q.numel() for q in vit.parameters())
    assert result["flops"]["blocks"] == blocks


def test_detector_analysis_is_consistent(repo_root):
    cfg = LazyConfig.load(os.path.join(repo_root, "configs/Shapes/vitdet_mask_rcnn_tiny.py"))
    model = instantiate(cfg.model).train()
    result = analyze_model(model, 128, 128)
    flops, params = result["flops"], result["params"]
    assert set(flops) == {"total", "backbone", "proposal_generator", "roi_heads"}
    assert flops["total"] == flops["backbone"] + flops["proposal_generator"] + flops["roi_heads"]
    assert params["total"] == sum(q.numel() for q in model.parameters())
    assert params["backbone"] == sum(q.numel() for q in model.backbone.parameters())
    # RPN head: two 3x3 convs + two 1x1 convs on p2..p6 of a 128x128 (padded) image
    positions = sum((128 // s) ** 2 for s in (4, 8, 16, 32, 64))
    ch = 64
    assert flops["proposal_generator"] == positions * (2 * 9 * ch * ch + ch * 3 + ch * 12)
    # deterministic (no detections), model state restored, mask == explicit == folded attention
    assert model.training and model.roi_heads.box_predictor.test_score_thresh == 0.05
    explicit = analyze_model(set_vit_attention_impl(model, "explicit"), 128, 128)
    assert explicit["flops"] == flops
    folded = analyze_model(set_vit_attention_impl(model, "sdpa_folded"), 128, 128)
    assert folded["flops"] == flops
    table = format_complexity_table(result)
    assert "backbone" in table and f"{params['total'] / 1e6:.3f}" in table


def test_analyze_model_tool(repo_root, capsys, tmp_path):
    sys.path.insert(0, os.path.join(repo_root, "tools"))
    try:
        import analyze_model as tool
    finally:
        sys.path.pop(0)
    tool.main(
        [
            "--config-file",
            os.path.join(repo_root, "configs/Shapes/vitdet_mask_rcnn_tiny.py"),
            "--height",
            "64",
            "--width",
            "64",
            "model.backbone.net.depth=2",
            "model.backbone.net.window_block_indexes=[0]",
        ]
    )
    out = capsys.readouterr().out
    assert "64x64" in out and "roi_heads" in out and "GFLOPs" in out
    with pytest.raises(SystemExit, match="config file not found: model.txt"):
        tool.main(["--config-file", "model.txt"])
    bad = tmp_path / "model.txt"
    bad.write_text("model = 1\n")
    with pytest.raises(SystemExit, match=r"model.txt.*(\.py|\.yaml)"):
        tool.main(["--config-file", str(bad)])
