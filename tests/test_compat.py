"""The install contract: detectron2 0.6 imports and works on this stack after ``import fpt``."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import fpt  # noqa: F401
from fpt import compat
from support import train_steps

DETECTRON2_MODULES = [
    "detectron2.checkpoint",
    "detectron2.config",
    "detectron2.data",
    "detectron2.data.transforms",
    "detectron2.engine",
    "detectron2.evaluation",
    "detectron2.export",
    "detectron2.layers",
    "detectron2.model_zoo",
    "detectron2.modeling",
    "detectron2.solver",
    "detectron2.structures",
    "detectron2.utils.analysis",
    "detectron2.utils.collect_env",
    "detectron2.utils.visualizer",
    "detectron2.projects.point_rend",
    "detectron2.projects.deeplab",
]


def _run_python(code):
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=300
    )


def test_import_is_silent_and_complete():
    """`import fpt` then every detectron2 module: no output, no warning (as errors)."""
    code = "import fpt\n" + "".join(f"import {m}\n" for m in DETECTRON2_MODULES)
    r = _run_python(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout == "" and r.stderr == ""


def test_pkg_resources_stand_in_does_not_leak():
    r = _run_python(
        "import importlib.util, fpt, detectron2.model_zoo as mz\n"
        "print(importlib.util.find_spec('pkg_resources') is None or 'real')\n"
        "print(mz.get_config_file('COCO-Detection/retinanet_R_50_FPN_1x.yaml'))"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    first, path = r.stdout.split()
    assert first in ("True", "real")
    assert os.path.isfile(path)


def test_collect_env_runs():
    from detectron2.utils.collect_env import collect_env_info

    info = collect_env_info()
    assert "detectron2" in info and "PyTorch" in info


def test_model_zoo_lazyconfig_trains_and_infers_on_cpu():
    """A model_zoo LazyConfig builds; a training step lowers nothing to NaN; inference runs."""
    from detectron2 import model_zoo
    from detectron2.config import instantiate
    from detectron2.structures import BitMasks, Boxes, Instances

    cfg = model_zoo.get_config("common/models/mask_rcnn_fpn.py")
    cfg.model.backbone.bottom_up.stages.norm = "BN"
    cfg.model.backbone.bottom_up.stem.norm = "BN"
    cfg.model.roi_heads.num_classes = 3
    cfg.model.pixel_std = [57.375, 57.120, 58.395]
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    h, w = 96, 128
    image = torch.randint(0, 255, (3, h, w), dtype=torch.uint8)
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 70.0]]))
    inst.gt_classes = torch.tensor([1])
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    mask[0, 12:70, 10:60] = True
    inst.gt_masks = BitMasks(mask)
    batch = [{"image": image, "instances": inst, "height": h, "width": w}]

    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    totals, losses = train_steps(model, batch, 3, opt)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"}
    assert totals[-1] < totals[0]
    model.eval()
    with torch.no_grad():
        out = model([{"image": image, "height": h, "width": w}])[0]["instances"]
    assert out.image_size == (h, w) and out.pred_boxes.tensor.shape[1] == 4


def _tiny_coco(tmp_path, n_images=6, seed=0):
    """A COCO ground truth with boxes + polygons, and noisy detections of it."""
    rng = np.random.RandomState(seed)
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": 200, "height": 160, "file_name": f"{i}.jpg"})
        for _ in range(rng.randint(1, 5)):
            x, y = rng.uniform(0, 120), rng.uniform(0, 90)
            bw, bh = rng.uniform(8, 70), rng.uniform(8, 60)
            cat = int(rng.randint(1, 4))
            poly = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                    "segmentation": [poly],
                }
            )
            for _ in range(2):  # a close detection and a sloppy one
                jx, jy = rng.normal(0, bw * 0.15), rng.normal(0, bh * 0.15)
                dx, dy, dw, dh = (
                    x + jx,
                    y + jy,
                    bw * rng.uniform(0.8, 1.2),
                    bh * rng.uniform(0.8, 1.2),
                )
                dets.append(
                    {
                        "image_id": i,
                        "bbox": [dx, dy, dw, dh],
                        "score": float(rng.uniform()),
                        "category_id": cat if rng.uniform() > 0.2 else int(rng.randint(1, 4)),
                        "segmentation": [[dx, dy, dx + dw, dy, dx + dw, dy + dh, dx, dy + dh]],
                    }
                )
    gt = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return str(path), dets


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_fast_coco_eval_matches_pycocotools(tmp_path, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from fpt.compat.fast_eval import evaluate_predictions_on_coco

    gt_file, dets = _tiny_coco(tmp_path)
    coco_gt = COCO(gt_file)
    if iou_type == "bbox":
        dets = [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
    else:
        from pycocotools import mask as mask_util

        for d in dets:
            rle = mask_util.frPyObjects(d.pop("segmentation"), 160, 200)
            d["segmentation"] = mask_util.merge(rle)
            d["segmentation"]["counts"] = d["segmentation"]["counts"].decode()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = evaluate_predictions_on_coco(coco_gt, dets, iou_type, use_fast_impl=True)
    ref = evaluate_predictions_on_coco(coco_gt, dets, iou_type, use_fast_impl=False)
    if not compat.HAS_COMPILED_OPS:
        assert type(fast).__module__ == "fpt.compat.fast_eval"
    assert isinstance(ref, COCOeval)
    assert ref.stats[0] > 0.1  # a meaningful case, not all-zero
    np.testing.assert_allclose(fast.stats, ref.stats, atol=1e-9)
    np.testing.assert_allclose(fast.eval["precision"], ref.eval["precision"], atol=1e-9)


def _explicit_deform_conv(x, offset, weight, bias, mask):
    """Deformable conv (3x3, stride 1, pad 1) by explicit bilinear sampling (DCN v1/v2 papers)."""
    n, c, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij"
    )
    cols = []
    for k in range(kh * kw):
        i, j = divmod(k, kw)
        py = ys + i - 1 + offset[:, 2 * k]
        px = xs + j - 1 + offset[:, 2 * k + 1]
        grid = torch.stack([px / (w - 1) * 2 - 1, py / (h - 1) * 2 - 1], dim=-1)
        sampled = torch.nn.functional.grid_sample(x, grid, align_corners=True, padding_mode="zeros")
        if mask is not None:
            sampled = sampled * mask[:, k : k + 1]
        cols.append(sampled)
    cols = torch.stack(cols, dim=2)  # N, C, K, H, W
    out = torch.einsum("nckhw,ock->nohw", cols, weight.reshape(out_c, c, kh * kw))
    return out + bias[None, :, None, None] if bias is not None else out


@pytest.mark.parametrize("modulated", [False, True])
def test_deform_conv_matches_explicit_sampling_with_gradients(modulated):
    from detectron2.layers import DeformConv, ModulatedDeformConv

    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64, requires_grad=True)
    # offsets that keep samples inside the map (grid_sample zero-pads differently at the border)
    offset = (torch.rand(2, 18, 7, 9, dtype=torch.float64) * 0.8 - 0.4).requires_grad_()
    if modulated:
        layer = ModulatedDeformConv(4, 5, 3, padding=1, bias=True).double()
        mask = torch.rand(2, 9, 7, 9, dtype=torch.float64, requires_grad=True)
        out = layer(x, offset, mask)
        ref = _explicit_deform_conv(x, offset, layer.weight, layer.bias, mask)
    else:
        layer = DeformConv(4, 5, 3, padding=1, bias=False).double()
        out = layer(x, offset)
        ref = _explicit_deform_conv(x, offset, layer.weight, None, None)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    torch.testing.assert_close(out[inner], ref[inner], atol=1e-10, rtol=1e-8)
    g = torch.randn_like(out)
    g[:, :, [0, -1]] = 0
    g[:, :, :, [0, -1]] = 0
    grads = torch.autograd.grad((out * g).sum(), [x, offset, layer.weight])
    ref_grads = torch.autograd.grad((ref * g).sum(), [x, offset, layer.weight])
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-6)


def test_rotated_ops_raise_one_clear_error():
    if compat.HAS_COMPILED_OPS:
        pytest.skip("compiled detectron2 provides rotated ops")
    from detectron2.layers import nms_rotated
    from detectron2.structures import RotatedBoxes, pairwise_iou_rotated

    boxes = RotatedBoxes(torch.tensor([[10.0, 10.0, 4.0, 6.0, 30.0]]))
    with pytest.raises(NotImplementedError, match=r"Rotated box IoU.*compiled ops"):
        pairwise_iou_rotated(boxes, boxes)
    with pytest.raises(NotImplementedError, match=r"Rotated NMS.*compiled ops"):
        nms_rotated(boxes.tensor, torch.ones(1), 0.5)


def test_plain_checkpoint_loads_silently(tmp_path, caplog):
    from detectron2.checkpoint import DetectionCheckpointer

    src, dst = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    DetectionCheckpointer(src, save_dir=str(tmp_path)).save("model_final")
    with caplog.at_level("WARNING", logger="fpt"):
        DetectionCheckpointer(dst).load(str(tmp_path / "model_final.pth"))
    assert torch.equal(src.weight, dst.weight)
    assert not [r for r in caplog.records if r.name == "fpt"]


def test_flop_count_analysis_works():
    from detectron2.utils.analysis import FlopCountAnalysis

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False))
    flops = FlopCountAnalysis(model, (torch.zeros(1, 3, 10, 12),))
    flops.unsupported_ops_warnings(False)
    assert flops.total() == 8 * 3 * 9 * 10 * 12  # one multiply-add per weight per position


def test_lazyconfig_save_roundtrip(tmp_path):
    from detectron2 import model_zoo
    from detectron2.config import LazyConfig

    cfg = model_zoo.get_config("common/optim.py")
    path = tmp_path / "cfg.yaml"
    LazyConfig.save(cfg, str(path))
    assert LazyConfig.load(str(path)).SGD.lr == cfg.SGD.lr
    assert "lr" in LazyConfig.to_py(cfg)


def test_numpy_aliases_and_pillow_constants():
    from PIL import Image

    import detectron2.evaluation.sem_seg_evaluation as sem_seg

    assert "int" not in np.__dict__  # numpy itself is left alone
    assert sem_seg.np.int is int and sem_seg.np.float is float and sem_seg.np.str is str
    assert sem_seg.np.zeros is np.zeros
    assert Image.LINEAR == Image.Resampling.BILINEAR


def test_ln_norm_name():
    """ "LN" is detectron2's own LayerNorm where detectron2 has one (main), else fpt's (0.6)."""
    import detectron2.layers.batch_norm
    from detectron2.layers import get_norm

    from fpt.layers import LayerNorm

    ln = get_norm("LN", 6)
    expected = getattr(detectron2.layers.batch_norm, "LayerNorm", LayerNorm)
    assert type(ln) is expected
    assert [n for n, _ in ln.named_parameters()] == ["weight", "bias"]  # same checkpoint keys
    x = torch.randn(2, 6, 4, 5)
    ref = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), ref)
    assert isinstance(get_norm("GN", 32), torch.nn.GroupNorm)  # the original names still work


def test_tensor_to_numpy_protocol():
    t = torch.arange(4.0)
    a = np.array(t[None], dtype="uint8", order="F")  # numpy 2 passes copy=...: no warning
    assert a.dtype == np.uint8 and a.tolist() == [[0, 1, 2, 3]]
    np.array(t)[0] = 9  # np.array copies
    assert t[0] == 0
    np.asarray(t)[0] = 9  # np.asarray shares memory, as before
    assert t[0] == 9


def test_coco_evaluator_fast_and_reference_agree(tmp_path):
    """The full COCOEvaluator path (instances -> json -> COCO eval), box and mask AP."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances
    from faster_coco_eval.core import mask as mask_util

    gt_file, dets = _tiny_coco(tmp_path, seed=0)
    name = f"compat_tiny_{os.getpid()}"
    register_coco_instances(name, {}, gt_file, str(tmp_path))
    try:
        DatasetCatalog.get(name)  # loads the json: sets the dataset-id <-> contiguous-id map
        by_image = {}
        for d in dets:
            by_image.setdefault(d["image_id"], []).append(d)
        inputs, outputs = [], []
        for image_id, ds in sorted(by_image.items()):
            x, y, w, h = np.array([d["bbox"] for d in ds]).T
            inst = Instances((160, 200))
            inst.pred_boxes = Boxes(
                torch.tensor(np.stack([x, y, x + w, y + h], 1), dtype=torch.float32)
            )
            inst.scores = torch.tensor([d["score"] for d in ds], dtype=torch.float32)
            inst.pred_classes = torch.tensor([d["category_id"] - 1 for d in ds])
            rles = [mask_util.merge(mask_util.frPyObjects(d["segmentation"], 160, 200)) for d in ds]
            inst.pred_masks = torch.from_numpy(
                mask_util.decode(rles).transpose(2, 0, 1).astype(bool)
            )
            inputs.append({"image_id": image_id})
            outputs.append({"instances": inst})
        results = {}
        for fast in (True, False):
            ev = COCOEvaluator(
                name,
                tasks=("bbox", "segm"),
                distributed=False,
                output_dir=str(tmp_path / f"eval_{fast}"),
                use_fast_impl=fast,
            )
            ev.reset()
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                ev.process(inputs, outputs)
                results[fast] = ev.evaluate()
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert results[True]["bbox"]["AP"] > 10 and results[True]["segm"]["AP"] > 10
    for task in ("bbox", "segm"):
        for key, value in results[False][task].items():
            assert results[True][task][key] == pytest.approx(value, abs=1e-6, nan_ok=True), key


def test_coco_mask_api_matches_pycocotools():
    """detectron2's mask_util now points at faster_coco_eval's fork: same results."""
    import pycocotools.mask as pm
    from detectron2.structures import masks as d2_masks
    from faster_coco_eval.core import mask as fm

    if not compat.HAS_COMPILED_OPS:
        assert d2_masks.mask_util is fm
    rng = np.random.RandomState(0)
    m = np.asfortranarray((rng.rand(30, 40, 3) > 0.5).astype(np.uint8))
    assert pm.encode(m) == fm.encode(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools' own numpy-2 warning
        np.testing.assert_array_equal(pm.decode(pm.encode(m)), fm.decode(fm.encode(m)))
    poly = [[1.5, 1.0, 28.0, 3.0, 25.0, 27.2, 2.0, 20.0], [30.0, 5.0, 38.0, 5.0, 34.0, 12.0]]
    assert pm.merge(pm.frPyObjects(poly, 30, 40)) == fm.merge(fm.frPyObjects(poly, 30, 40))
    rle = fm.encode(m)
    np.testing.assert_array_equal(pm.area(rle), fm.area(rle))
    np.testing.assert_array_equal(pm.toBbox(rle), fm.toBbox(rle))
    np.testing.assert_array_equal(pm.iou(rle, rle, [0, 0, 0]), fm.iou(rle, rle, [0, 0, 0]))
    bitmask = d2_masks.polygons_to_bitmask(poly, 30, 40)  # the training path for polygon masks
    assert bitmask.dtype == bool and bitmask.sum() == fm.area(
        fm.merge(fm.frPyObjects(poly, 30, 40))
    )


def test_installed_detectron2_wheel_contract():
    """The installed detectron2 (our v0.6 wheel, or main built by tools/build_detectron2.py):
    model-zoo configs packaged, no stale exact black pin among what it installs."""
    from importlib import metadata

    from detectron2 import model_zoo

    import detectron2

    here = os.path.dirname(detectron2.__file__)
    (dist,) = [  # the distribution of the detectron2 that is imported (not a shadowed one)
        d
        for d in metadata.distributions()
        if "detectron2" in (d.read_text("top_level.txt") or "").split()
        and os.path.samefile(d.locate_file("detectron2"), here)
    ]
    requires = dist.requires or []
    pins = [r for r in requires if r.lower().startswith("black==") and "extra ==" not in r]
    assert not pins, requires  # an extra's pin (main: black==22.3.0 for "dev") is not installed
    cfg = model_zoo.get_config("common/models/mask_rcnn_fpn.py")
    assert cfg.model.roi_heads.num_classes == 80
    assert model_zoo.get_config(
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
    ).MODEL.WEIGHTS


def test_class_histogram_is_no_longer_skipped(caplog):
    """data/build.py:171 used np.int inside a caller's try/except: the table was silently lost."""
    from detectron2.data.build import print_instances_class_histogram

    dicts = [{"annotations": [{"category_id": 0}, {"category_id": 1}, {"category_id": 1}]}]
    with caplog.at_level("INFO"):
        print_instances_class_histogram(dicts, ["cat", "dog"])
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "dog" in text and "total" in text


def test_matching_heuristics_query_suffix(tmp_path):
    """Upstream ViTDet configs load MAE weights as 'file.pth?matching_heuristics=True'."""
    from detectron2.checkpoint import DetectionCheckpointer

    model = torch.nn.Module()
    model.backbone = torch.nn.Module()
    model.backbone.net = torch.nn.Linear(3, 2)
    path = tmp_path / "pretrain.pth"
    torch.save({"model": {"weight": torch.full((2, 3), 0.5), "bias": torch.ones(2)}}, path)
    DetectionCheckpointer(model).load(str(path))  # plain path: keys do not match the prefix
    assert not torch.allclose(model.backbone.net.weight, torch.full((2, 3), 0.5))
    DetectionCheckpointer(model).load(f"{path}?matching_heuristics=True")
    assert torch.allclose(model.backbone.net.weight, torch.full((2, 3), 0.5))
    assert torch.allclose(model.backbone.net.bias, torch.ones(2))
