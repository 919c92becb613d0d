"""tools/convert_detr_checkpoint.py: official DETR / DETR-with-iRPE layout -> ours.

The official layout is rebuilt here from its naming rules (torchvision's ResNet names under
``backbone.0.body.``, DETR's transformer names, a 92-row class head indexed by COCO category id),
independently of the converter's code.
"""

import argparse
import os
import subprocess
import sys

import pytest
import torch
import torchvision

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate

from fpt.config import load_config
from support import COCO_CATEGORY_IDS
from support import detr_official_name as official_name
from support import detr_to_official as to_official

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "convert_detr_checkpoint.py")
TINY = os.path.join(REPO, "configs", "Shapes", "detr_tiny.py")
R50_IRPE = os.path.join(REPO, "configs", "COCO", "DETR", "detr_r50_irpe_k_300ep.py")

sys.path.insert(0, os.path.join(REPO, "tools"))
import convert_detr_checkpoint  # noqa: E402


def official_r50_keys(enc_rpe_tables=()):
    """Official DETR-R50 keys and shapes from their naming rules: torchvision's resnet50 without
    ``fc`` (FrozenBatchNorm2d: no num_batches_tracked) and DETR's transformer and heads."""
    shapes = {
        f"backbone.0.body.{k}": tuple(v.shape)
        for k, v in torchvision.models.resnet50().state_dict().items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    d, ffn = 256, 2048
    shapes.update(
        {
            "input_proj.weight": (d, 2048, 1, 1),
            "input_proj.bias": (d,),
            "query_embed.weight": (100, d),
            "class_embed.weight": (92, d),
            "class_embed.bias": (92,),
            "transformer.decoder.norm.weight": (d,),
            "transformer.decoder.norm.bias": (d,),
        }
    )
    for i in range(3):
        shapes[f"bbox_embed.layers.{i}.weight"] = (4 if i == 2 else d, d)
        shapes[f"bbox_embed.layers.{i}.bias"] = (4 if i == 2 else d,)
    attention = {"in_proj_weight": (3 * d, d), "in_proj_bias": (3 * d,)}
    attention.update({"out_proj.weight": (d, d), "out_proj.bias": (d,)})
    ffn_norms = {"linear1.weight": (ffn, d), "linear1.bias": (ffn,)}
    ffn_norms.update({"linear2.weight": (d, ffn), "linear2.bias": (d,)})
    for part, attns, norms in (
        ("encoder", ["self_attn"], 2),
        ("decoder", ["self_attn", "multihead_attn"], 3),
    ):
        for i in range(6):
            prefix = f"transformer.{part}.layers.{i}."
            for a in attns:
                shapes.update({f"{prefix}{a}.{k}": s for k, s in attention.items()})
            shapes.update({prefix + k: s for k, s in ffn_norms.items()})
            for n in range(1, norms + 1):
                shapes[f"{prefix}norm{n}.weight"] = shapes[f"{prefix}norm{n}.bias"] = (d,)
            if part == "encoder":
                for name, shape in enc_rpe_tables:
                    shapes[f"{prefix}self_attn.{name}"] = shape
    return shapes


def convert(tmp_path, checkpoint, *args):
    """Run the converter's main() on ``checkpoint`` (a dict, saved first); returns the output
    path and what it printed."""
    src, dst = tmp_path / "official.pth", tmp_path / "converted.pth"
    torch.save(checkpoint, src)
    convert_detr_checkpoint.main([str(src), str(dst), *args])
    return dst


def test_r50_irpe_official_layout_converts_to_the_model_keys(tmp_path, capsys):
    shapes = official_r50_keys([("rpe_k.lookup_table_weight", (1, 32, 81))])
    torch.manual_seed(0)
    official = {k: torch.randn(s) for k, s in shapes.items()}
    args = argparse.Namespace(enc_rpe2d="rpe-2.0-product-ctx-1-k", lr=1e-4)
    dst = convert(tmp_path, {"model": official, "args": args, "epoch": 299})
    out = capsys.readouterr().out
    assert "args.enc_rpe2d = rpe-2.0-product-ctx-1-k" in out
    assert "class head 92 -> 81" in out and "unused" not in out and "missing" not in out

    converted = torch.load(dst, weights_only=True)
    assert converted["__author__"] == "fpt/tools/convert_detr_checkpoint.py"
    converted = converted["model"]
    cfg = load_config(R50_IRPE)
    with torch.device("meta"):
        target = instantiate(cfg.model).state_dict()
    assert set(converted) == set(target)
    assert all(converted[k].shape == target[k].shape for k in target)
    # every tensor comes from its official name, untouched except the class head's rows
    for key, value in converted.items():
        source = official[official_name(key)]
        if key.startswith("class_embed."):
            source = source[torch.as_tensor(COCO_CATEGORY_IDS + [91])]
        assert torch.equal(value, source), key
    assert torch.equal(
        converted["backbone.stem.conv1.norm.running_var"],
        official["backbone.0.body.bn1.running_var"],
    )
    assert torch.equal(
        converted["backbone.res4.0.shortcut.norm.weight"],
        official["backbone.0.body.layer3.0.downsample.1.weight"],
    )
    # label k is the k-th sorted COCO id: person (1) -> 0, toothbrush (90) -> 79
    assert torch.equal(converted["class_embed.bias"][0], official["class_embed.bias"][1])
    assert torch.equal(converted["class_embed.bias"][79], official["class_embed.bias"][90])
    assert torch.equal(converted["class_embed.bias"][80], official["class_embed.bias"][91])


@pytest.mark.parametrize(
    "spec", [None, "rpe-2.0-product-ctx-1-k", "rpe-1.9-euc-bias-0-qk", "rpe-2.5-quant-ctx-0-qkv"]
)
def test_round_trip_through_the_official_layout_gives_the_same_outputs(tmp_path, spec):
    opts = ["model.num_classes=80", f"model.transformer.enc_rpe={spec or 'null'}"]
    cfg = load_config(TINY, opts)
    torch.manual_seed(1)
    model = instantiate(cfg.model).eval()
    with torch.no_grad():  # non-trivial tables, norms and BN statistics
        for name, p in model.named_parameters():
            if "lookup_table" in name or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
        for name, b in model.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 2.0)
    official = to_official(model.state_dict())
    assert any(k.startswith("backbone.0.body.layer4.") for k in official)
    dst = convert(tmp_path, {"model": official}, "--config-file", TINY, *opts)

    fresh = instantiate(cfg.model).eval()
    DetectionCheckpointer(fresh).load(str(dst))
    images = [
        {"image": torch.rand(3, 96, 128) * 255, "height": 300, "width": 400},
        {"image": torch.rand(3, 128, 80) * 255},
    ]
    with torch.no_grad():
        expected, got = model(images), fresh(images)
    for e, g in zip(expected, got):
        e, g = e["instances"], g["instances"]
        assert len(g) == 10
        assert torch.equal(e.pred_classes, g.pred_classes)
        assert torch.equal(e.scores, g.scores)
        assert torch.equal(e.pred_boxes.tensor, g.pred_boxes.tensor)


def test_report_lists_unused_and_missing_keys(tmp_path, capsys):
    cfg = load_config(TINY, ["model.num_classes=80"])
    official = to_official(instantiate(cfg.model).state_dict())
    official["transformer.encoder.layers.0.extra.weight"] = torch.zeros(2)
    del official["bbox_embed.layers.2.bias"]
    convert(tmp_path, {"model": official}, "--config-file", TINY, "model.num_classes=80")
    out = capsys.readouterr().out
    assert "unused, in the file only (1): transformer.encoder.layers.*.extra.weight" in out
    assert "missing, in the model only (1): bbox_embed.layers.*.bias" in out


def test_table_shape_mismatch_is_one_line_naming_the_key(tmp_path):
    cfg = load_config(
        TINY, ["model.num_classes=80", "model.transformer.enc_rpe=rpe-1.9-product-ctx-1-k"]
    )
    official = to_official(instantiate(cfg.model).state_dict())
    with pytest.raises(SystemExit) as e:
        convert(
            tmp_path,
            {"model": official},
            "--config-file",
            TINY,
            "model.num_classes=80",
            "model.transformer.enc_rpe=rpe-2.0-product-ctx-1-k",
        )
    message = str(e.value.code)
    assert "\n" not in message
    assert "transformer.encoder.layers.0.self_attn.rpe_k.lookup_table_weight" in message
    assert "(1, 16, 49) != model shape (1, 16, 81)" in message


def test_rpe_spec_is_inferred_from_table_shapes_when_args_are_missing(tmp_path, capsys):
    cfg = load_config(
        TINY, ["model.num_classes=80", "model.transformer.enc_rpe=rpe-3.0-euc-ctx-0-qv"]
    )
    official = to_official(instantiate(cfg.model).state_dict())
    convert(tmp_path, {"model": official}, "--config-file", TINY, "model.num_classes=80")
    out = capsys.readouterr().out
    # euc and quant share shapes; the ratio is only known up to int(2 ratio): a shape twin
    assert "iRPE tables shaped as rpe-3.0-euc-ctx-0-qv" in out
    assert "run the model with model.transformer.enc_rpe=<its spec>" in out


@pytest.mark.parametrize(
    "content,expected",
    [
        ({"model": {"layers.0.weight": torch.zeros(2)}}, "not a DETR checkpoint (missing"),
        ({"state": 1}, "not a DETR checkpoint (missing"),
        (b"plain text, not a torch file", "cannot read it as a torch file"),
    ],
)
def test_non_detr_file_is_one_error_line(tmp_path, content, expected):
    src, dst = tmp_path / "x.pth", tmp_path / "out.pth"
    if isinstance(content, bytes):
        src.write_bytes(content)
    else:
        torch.save(content, src)
    with pytest.raises(SystemExit) as e:
        convert_detr_checkpoint.main([str(src), str(dst)])
    message = str(e.value.code)
    assert "\n" not in message
    assert message.startswith(f"{src}: ") and expected in message
    assert not dst.exists()


def test_command_line_error_exit_code_and_stderr(tmp_path):
    src = tmp_path / "x.pth"
    torch.save({"model": {"layers.0.weight": torch.zeros(2)}}, src)
    result = subprocess.run(
        [sys.executable, TOOL, str(src), str(tmp_path / "out.pth")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"{src}: not a DETR checkpoint (missing class_embed.weight, query_embed.weight, "
        "transformer.encoder.layers.0.self_attn.in_proj_weight, backbone.0.body.*; its keys "
        "start with layers.0.weight)"
    ]


def test_unconverted_official_file_is_refused_with_the_command_to_run(tmp_path):
    from fpt.config import ConfigError
    from fpt.predictor import Predictor

    cfg = load_config(TINY, ["model.num_classes=80"])
    official = tmp_path / "official.pth"
    torch.save({"model": to_official(instantiate(cfg.model).state_dict())}, official)
    cfg = load_config(TINY, ["model.num_classes=80", f"train.init_checkpoint={official}"])
    with pytest.raises(ConfigError) as e:
        Predictor(cfg)
    assert "\n" not in str(e.value)
    assert "official DETR checkpoint" in str(e.value)
    assert "tools/convert_detr_checkpoint.py IN OUT" in str(e.value)
