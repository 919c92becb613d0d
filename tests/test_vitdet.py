"""ViTDet models: checkpoint key parity, Simple Feature Pyramid, padding, configs, lr decay."""

import os
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from fpt.modeling import SimpleFeaturePyramid, ViT, add_vitdet_config, get_vit_lr_decay_rate
from fpt.modeling.vit import set_vit_attention_impl

CFG = "configs/COCO/ViTDet/{}.py"


def read_keys(repo_root, name):
    with open(os.path.join(repo_root, "tests", "data", name)) as f:
        return [tuple(line.rstrip("\n").split("\t")) for line in f]


@pytest.mark.parametrize(
    "config,reference,num_params",
    [
        ("mask_rcnn_vitdet_b_100ep", "vitdet_mask_rcnn_b_keys.tsv", 110_895_792),
        ("cascade_mask_rcnn_vitdet_b_100ep", "vitdet_cascade_mask_rcnn_b_keys.tsv", 141_160_990),
    ],
)
def test_state_dict_matches_upstream_vitdet(repo_root, config, reference, num_params):
    cfg = LazyConfig.load(os.path.join(repo_root, CFG.format(config)))
    model = instantiate(cfg.model)
    ours = [
        (k, "x".join(map(str, v.shape)), str(v.dtype).replace("torch.", ""))
        for k, v in model.state_dict().items()
    ]
    assert ours == read_keys(repo_root, reference)
    assert sum(p.numel() for p in model.parameters()) == num_params


@pytest.mark.parametrize("size", ["l_100ep", "h_75ep"])
def test_large_configs_describe_the_paper_models(repo_root, size):
    cfg = LazyConfig.load(os.path.join(repo_root, CFG.format("cascade_mask_rcnn_vitdet_" + size)))
    net = cfg.model.backbone.net
    dim, depth, dp, decay = {"l_100ep": (1024, 24, 0.4, 0.8), "h_75ep": (1280, 32, 0.5, 0.9)}[size]
    assert (net.embed_dim, net.depth, net.num_heads, net.drop_path_rate) == (dim, depth, 16, dp)
    glob = [i for i in range(depth) if i not in net.window_block_indexes]
    assert glob == [depth // 4 - 1, depth // 2 - 1, 3 * depth // 4 - 1, depth - 1]
    assert cfg.optimizer.params.lr_factor_func.keywords == {
        "num_layers": depth,
        "lr_decay_rate": decay,
    }
    assert cfg.model.roi_heads._target_.__name__ == "CascadeROIHeads"
    assert cfg.train.max_iter == (184375 if size == "l_100ep" else 184375 * 3 // 4)
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.weight_decay == 0.1
    assert cfg.train.amp.enabled


def tiny_sfp(square_pad=0, norm="LN"):
    torch.manual_seed(0)
    net = ViT(
        img_size=64,
        patch_size=16,
        embed_dim=32,
        depth=2,
        num_heads=2,
        window_size=2,
        window_block_indexes=[0],
        use_rel_pos=True,
        pretrain_img_size=64,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )
    return SimpleFeaturePyramid(
        net,
        "last_feat",
        16,
        (4.0, 2.0, 1.0, 0.5),
        top_block=LastLevelMaxPool(),
        norm=norm,
        square_pad=square_pad,
    )


def test_simple_feature_pyramid_levels_match_formula():
    sfp = tiny_sfp().eval()
    names = [n for n, _ in sfp.named_children()]
    assert names[:5] == ["simfp_2", "simfp_3", "simfp_4", "simfp_5", "net"]
    x = torch.randn(2, 3, 64, 96)
    out = sfp(x)
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    assert {k: s.stride for k, s in sfp.output_shape().items()} == {
        "p2": 4,
        "p3": 8,
        "p4": 16,
        "p5": 32,
        "p6": 64,
    }
    feat = sfp.net(x)["last_feat"]  # (2, 32, 4, 6)

    def conv_ln(conv, t):
        t = F.conv2d(t, conv.weight, conv.bias, padding=conv.padding)
        u = t.mean(1, keepdim=True)
        s = (t - u).pow(2).mean(1, keepdim=True)
        t = (t - u) / torch.sqrt(s + 1e-6)
        return conv.norm.weight[:, None, None] * t + conv.norm.bias[:, None, None]

    s5 = sfp.simfp_5
    p5 = conv_ln(s5[2], conv_ln(s5[1], F.max_pool2d(feat, 2)))
    torch.testing.assert_close(out["p5"], p5, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["p6"], F.max_pool2d(p5, 1, 2))
    s3 = sfp.simfp_3
    up = F.conv_transpose2d(feat, s3[0].weight, s3[0].bias, stride=2)
    torch.testing.assert_close(out["p3"], conv_ln(s3[2], conv_ln(s3[1], up)), atol=1e-5, rtol=1e-5)
    assert out["p2"].shape == (2, 16, 16, 24)
    # conv bias only without norm
    assert sfp.simfp_4[0].bias is None and tiny_sfp(norm="").simfp_4[0].bias is not None


def test_simple_feature_pyramid_bad_arguments():
    net = tiny_sfp().net
    with pytest.raises(ValueError, match="in_feature='res5'"):
        SimpleFeaturePyramid(net, "res5", 16, (2.0, 1.0))
    with pytest.raises(ValueError, match="scale factor 3.0"):
        SimpleFeaturePyramid(net, "last_feat", 16, (3.0,))
    with pytest.raises(ValueError, match="log2-contiguous"):
        SimpleFeaturePyramid(net, "last_feat", 16, (4.0, 1.0))


def test_generalized_rcnn_pads_to_square(repo_root):
    cfg = LazyConfig.load(os.path.join(repo_root, "configs/Shapes/vitdet_mask_rcnn_tiny.py"))
    model = instantiate(cfg.model).eval()
    assert model.backbone.padding_constraints == {"size_divisiblity": 32, "square_size": 128}
    images = model.preprocess_image(
        [{"image": torch.zeros(3, 96, 112)}, {"image": torch.zeros(3, 64, 80)}]
    )
    assert images.tensor.shape[-2:] == (128, 128)
    assert images.image_sizes == [(96, 112), (64, 80)]
    assert tiny_sfp().size_divisibility == 32


def test_yacs_backbone_builder():
    cfg = get_cfg()
    add_vitdet_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_vitdet_backbone"
    cfg.MODEL.VIT.update(
        IMG_SIZE=64,
        EMBED_DIM=32,
        DEPTH=2,
        NUM_HEADS=2,
        WINDOW_SIZE=2,
        WINDOW_BLOCK_INDEXES=[0],
        OUT_CHANNELS=16,
        SQUARE_PAD=64,
    )
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    assert isinstance(backbone, SimpleFeaturePyramid) and backbone.size_divisibility == 64
    out = backbone(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p2": (1, 16, 16, 16),
        "p3": (1, 16, 8, 8),
        "p4": (1, 16, 4, 4),
        "p5": (1, 16, 2, 2),
        "p6": (1, 16, 1, 1),
    }
    assert backbone.net.blocks[1].attn.rel_pos_h.shape == (7, 16)
    cfg2 = get_cfg()
    cfg2.MODEL.BACKBONE.NAME = "build_vitdet_backbone"
    with pytest.raises(KeyError, match="add_vitdet_config"):
        build_backbone(cfg2, ShapeSpec(channels=3))


def test_lr_decay_rate_and_optimizer_groups(repo_root):
    f = partial(get_vit_lr_decay_rate, lr_decay_rate=0.5, num_layers=4)
    assert f("backbone.net.pos_embed") == 0.5**5
    assert f("backbone.net.patch_embed.proj.weight") == 0.5**5
    assert f("backbone.net.blocks.0.attn.qkv.weight") == 0.5**4
    assert f("backbone.net.blocks.3.mlp.fc1.bias") == 0.5
    assert f("backbone.net.blocks.1.residual.conv1.weight") == 1.0
    assert f("backbone.simfp_2.0.weight") == 1.0 and f("roi_heads.box_head.fc1.weight") == 1.0

    cfg = LazyConfig.load(os.path.join(repo_root, "configs/Shapes/vitdet_mask_rcnn_tiny.py"))
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    assert isinstance(opt, torch.optim.AdamW)
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    lr, decay = cfg.optimizer.lr, 0.9
    named = dict(model.named_parameters())
    assert len(group_of) == len(named)
    pe = group_of[id(named["backbone.net.pos_embed"])]
    assert pe["lr"] == pytest.approx(lr * decay**5) and pe["weight_decay"] == 0.0
    b2 = group_of[id(named["backbone.net.blocks.2.attn.qkv.weight"])]
    assert (
        b2["lr"] == pytest.approx(lr * decay**2)
        and b2["weight_decay"] == cfg.optimizer.weight_decay
    )
    ln = group_of[id(named["backbone.net.blocks.2.norm1.weight"])]
    assert ln["weight_decay"] == 0.0  # torch LayerNorm: weight_decay_norm
    head = group_of[id(named["roi_heads.box_head.fc1.weight"])]
    assert head["lr"] == pytest.approx(lr)


def test_fused_and_explicit_models_agree(repo_root):
    cfg = LazyConfig.load(os.path.join(repo_root, "configs/Shapes/vitdet_mask_rcnn_tiny.py"))
    torch.manual_seed(0)
    backbone = instantiate(cfg.model.backbone).eval()
    x = torch.randn(1, 3, 128, 96)
    fused = backbone(x)
    explicit = set_vit_attention_impl(backbone, "explicit")(x)
    for k in fused:
        torch.testing.assert_close(fused[k], explicit[k], atol=1e-5, rtol=1e-5)
