"""MAE/timm ViT weights and official ViTDet checkpoints load into our models."""

import logging
import os
import pickle
import sys

import pytest
import torch
import torch.nn.functional as F

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate

from fpt.checkpoint import load_vit_pretrained

TINY = "configs/Shapes/vitdet_mask_rcnn_tiny.py"


def tiny_model(repo_root):
    torch.manual_seed(0)
    return instantiate(LazyConfig.load(os.path.join(repo_root, TINY)).model)


def synthetic_mae(model, grid=8):
    """An MAE-format checkpoint for the tiny model's ViT (pos_embed on a ``grid`` x ``grid``)."""
    g = torch.Generator().manual_seed(1)
    net = model.backbone.net
    ckpt = {}
    for k, v in net.state_dict().items():
        if "rel_pos" not in k:
            ckpt[k] = torch.randn(v.shape, generator=g)
    C = net.pos_embed.shape[-1]
    ckpt["pos_embed"] = torch.randn(1, 1 + grid * grid, C, generator=g)
    ckpt.update(
        {
            "cls_token": torch.randn(1, 1, C),
            "norm.weight": torch.ones(C),
            "norm.bias": torch.zeros(C),
            "head.weight": torch.randn(10, C),
            "head.bias": torch.zeros(10),
        }
    )
    return ckpt


def test_mae_checkpoint_loads_into_backbone_net(repo_root, tmp_path, caplog):
    model = tiny_model(repo_root)
    ckpt = synthetic_mae(model)
    path = str(tmp_path / "mae.pth")
    torch.save({"model": ckpt, "args": {"epochs": 1600}}, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="fpt.checkpoint.vit_weights"):
        report = load_vit_pretrained(model, path)
    sd = model.state_dict()
    for k, v in ckpt.items():
        if k in report["loaded"]:
            assert torch.equal(sd["backbone.net." + k], v), k
    assert report["resized"] == []
    assert sorted(report["unused"]) == [
        "cls_token",
        "head.bias",
        "head.weight",
        "norm.bias",
        "norm.weight",
    ]
    assert len(report["loaded"]) == len(ckpt) - 5
    new = report["new"]
    assert "backbone.net.blocks.0.attn.rel_pos_h" in new and "backbone.simfp_2.0.weight" in new
    assert "roi_heads.box_head.fc1.weight" in new and not any(
        k.startswith("backbone.net.blocks.0.mlp") for k in new
    )
    for k in new:
        assert torch.equal(sd[k], before[k])
    text = caplog.text
    assert "Loaded" in text and "rel_pos_h" in text and "cls_token" in text


def test_pos_embed_is_resized_and_mismatches_are_named(repo_root):
    model = tiny_model(repo_root)
    ckpt = synthetic_mae(model, grid=14)
    report = load_vit_pretrained(model.backbone, ckpt)  # a SimpleFeaturePyramid works too
    assert report["resized"] == ["pos_embed"]
    grid = ckpt["pos_embed"][:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False)
    expected = torch.cat(
        [ckpt["pos_embed"][:, :1], expected.permute(0, 2, 3, 1).reshape(1, 64, -1)], 1
    )
    torch.testing.assert_close(model.backbone.net.pos_embed.data, expected)

    ckpt["blocks.1.attn.qkv.weight"] = torch.randn(3, 3)
    with pytest.raises(ValueError, match=r"blocks.1.attn.qkv.weight: checkpoint shape \(3, 3\)"):
        load_vit_pretrained(model, ckpt)
    with pytest.raises(ValueError, match="no key matches"):
        load_vit_pretrained(model, {"encoder.layer.0.weight": torch.zeros(1)})


def test_convert_official_and_mae_checkpoints(repo_root, tmp_path, capsys):
    sys.path.insert(0, os.path.join(repo_root, "tools"))
    try:
        import convert_vitdet_checkpoint as tool
    finally:
        sys.path.pop(0)
    source = tiny_model(repo_root)
    official = {
        "model": {k: v.numpy() for k, v in source.state_dict().items()},
        "__author__": "test",
    }
    pkl = str(tmp_path / "official.pkl")
    with open(pkl, "wb") as f:
        pickle.dump(official, f)
    out = str(tmp_path / "converted.pth")
    tool.main([pkl, out, "--config-file", os.path.join(repo_root, TINY)])
    assert "tensors for" in capsys.readouterr().out

    torch.manual_seed(5)
    target = instantiate(LazyConfig.load(os.path.join(repo_root, TINY)).model)
    DetectionCheckpointer(target).load(out)
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k

    mae = str(tmp_path / "mae.pth")
    torch.save({"model": synthetic_mae(source)}, mae)
    tool.main([mae, str(tmp_path / "mae_d2.pth"), "--config-file", os.path.join(repo_root, TINY)])
    printed = capsys.readouterr().out
    assert "not in the checkpoint" in printed and "unused (5)" in printed
    converted = torch.load(str(tmp_path / "mae_d2.pth"), weights_only=True)["model"]
    assert all(k.startswith("backbone.net.") for k in converted)
    with pytest.raises(SystemExit, match="shape"):
        bad = {"model": {"backbone.net.pos_embed": torch.zeros(1, 2, 3)}}
        torch.save(bad, str(tmp_path / "bad.pth"))
        tool.main(
            [
                str(tmp_path / "bad.pth"),
                str(tmp_path / "x.pth"),
                "--config-file",
                os.path.join(repo_root, TINY),
            ]
        )
