"""FPT models from the LazyConfigs: a tiny Mask R-CNN trains and predicts, the segmentation
config trains, and the COCO configs say what their names say."""

import os

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.backbone.resnet import BasicBlock, ResNet
from detectron2.structures import BitMasks, Boxes, Instances
from support import assert_loss_falls, train_steps

from fpt.modeling import FPT

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _load(path):
    return LazyConfig.load(os.path.join(CONFIGS, path))


def _shrink_resnet(bottom_up):
    """A ResNet-18 with 16..128 channels and BatchNorm: fast on CPU, trains from scratch."""
    bottom_up.stem.update(out_channels=16, norm="BN")
    channels = [16, 16, 32, 64, 128]
    bottom_up.stages = [
        L(ResNet.make_stage)(
            block_class=BasicBlock,
            num_blocks=1,
            in_channels=channels[i],
            out_channels=channels[i + 1],
            stride_per_block=[1 if i == 0 else 2],
            norm="BN",
        )
        for i in range(4)
    ]
    bottom_up.freeze_at = 0


def _synthetic_batch(seed=0, size=(96, 128)):
    """Two images with a bright square and a dimmer disk on noise, with boxes and masks."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    batch = []
    for i in range(2):
        image = torch.rand(3, h, w, generator=g) * 40
        square = (ys >= 10 + 8 * i) & (ys < 50 + 8 * i) & (xs >= 12) & (xs < 52)
        disk = (ys - 60) ** 2 + (xs - (80 + 6 * i)) ** 2 < 20**2
        image[:, square] += 200
        image[1:, disk] += 120
        masks = torch.stack([square, disk])
        instances = Instances((h, w))
        instances.gt_masks = BitMasks(masks)
        instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        instances.gt_classes = torch.tensor([0, 1])
        batch.append({"image": image, "instances": instances, "height": h, "width": w})
    return batch


def test_tiny_fpt_mask_rcnn_trains_and_predicts():
    torch.manual_seed(0)
    cfg = _load("common/models/mask_rcnn_fpt_tiny.py")
    _shrink_resnet(cfg.model.backbone.pyramid.bottom_up)
    cfg.model.roi_heads.batch_size_per_image = 64
    cfg.model.proposal_generator.post_nms_topk = (100, 50)
    cfg.model.roi_heads.box_predictor.update(test_score_thresh=0.0, test_topk_per_image=10)
    model = instantiate(cfg.model)
    assert isinstance(model.backbone, FPT)
    assert len(model.backbone.grounding_transformers) == 6
    batch = _synthetic_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses, loss_dict = train_steps(model, batch, 6, optimizer)
    assert_loss_falls(losses)
    assert {"loss_mask", "loss_rpn_cls", "loss_box_reg"} <= set(loss_dict)

    model.eval()
    with torch.no_grad():
        outputs = model([{"image": b["image"]} for b in batch])
    for out in outputs:
        instances = out["instances"]
        assert len(instances) > 0
        assert instances.image_size == (96, 128)
        assert instances.pred_masks.shape[1:] == (96, 128)
        assert isinstance(instances.pred_boxes, Boxes)
        assert instances.scores.max() <= 1


def test_semantic_segmentation_config_trains():
    torch.manual_seed(0)
    cfg = _load("Cityscapes/semantic_R_50_FPT.py")
    assert cfg.dataloader.train.dataset.names == "cityscapes_fine_sem_seg_train"
    _shrink_resnet(cfg.model.backbone.pyramid.bottom_up)
    cfg.model.backbone.out_channels = 32
    cfg.model.sem_seg_head.update(conv_dims=32, num_classes=4)
    cfg.model.pixel_std = [57.0, 57.0, 57.0]
    model = instantiate(cfg.model).train()
    fpt = model.backbone
    assert {gt.mode for gt in fpt.grounding_transformers.values()} == {"local"}
    assert fpt._out_features == ["p2", "p3", "p4", "p5"]
    g = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(2):
        image = torch.rand(3, 64, 128, generator=g) * 255
        target = (image[0] > 128).long() + 2 * (image[1] > 128).long()
        target[:4] = 255  # ignored
        batch.append({"image": image, "sem_seg": target})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses, _ = train_steps(model, batch, 3, optimizer)
    assert losses[-1] < losses[0], losses
    grads = [p.grad for p in fpt.grounding_transformers.parameters()]
    assert all(gr is not None and gr.abs().sum() > 0 for gr in grads)
    model.eval()
    with torch.no_grad():
        out = model([{"image": batch[0]["image"], "height": 32, "width": 64}])
    assert out[0]["sem_seg"].shape == (4, 32, 64)


@pytest.mark.parametrize(
    "name,depth,masks,iters",
    [
        (f"{kind}_rcnn_R_{depth}_FPT_{s}", depth, kind == "mask", {"1x": 90000, "3x": 270000}[s])
        for kind in ("mask", "faster")
        for depth in (50, 101)
        for s in ("1x", "3x")
    ],
)
def test_coco_configs(name, depth, masks, iters):
    cfg = _load(f"COCO/FPT/{name}.py")
    backbone = cfg.model.backbone
    assert backbone.pyramid.bottom_up.stages.depth == depth
    assert f"R-{depth}.pkl" in cfg.train.init_checkpoint
    assert (cfg.model.roi_heads.mask_head is not None) == masks
    assert cfg.train.max_iter == iters
    assert cfg.lr_multiplier.scheduler.milestones[-1] == iters
    assert cfg.dataloader.train.dataset.names == "coco_2017_train"
    assert (backbone.norm, backbone.dropblock_prob) == ("SyncBN", 0.1)
    switches = ("self_transformer", "grounding_transformer", "rendering_transformer")
    assert all(backbone.get(k, True) for k in switches)  # FPT's defaults: all three on


def test_fast_preset_is_the_1x_model_with_three_choices():
    fast, full = (_load(f"COCO/FPT/mask_rcnn_R_50_FPT{s}_1x.py") for s in ("_fast", ""))
    choices = dict(grounding_mode="local", kv_pool=[8, 4, 2, 1], fusion_kernel_size=1)
    assert {k: fast.model.backbone[k] for k in choices} == choices
    full.model.backbone.update(choices)
    assert LazyConfig.to_py(full.model) == LazyConfig.to_py(fast.model)
    assert fast.train.max_iter == full.train.max_iter
    neck = instantiate(fast.model.backbone)
    assert {gt.mode for gt in neck.grounding_transformers.values()} == {"local"}
    assert [st.attention.kv_pool for st in neck.self_transformers.values()] == [8, 4, 2, 1]


def test_common_model_sets_only_what_differs_from_the_defaults():
    """configs/common/models/mask_rcnn_fpt.py restates no default of FPT's constructor (but
    the two the pyramid interpolates), so the class's defaults are the config's."""
    import inspect

    backbone = LazyConfig.load(
        os.path.join(CONFIGS, "common/models/mask_rcnn_fpt.py")
    ).model.backbone
    defaults = {name: p.default for name, p in inspect.signature(FPT.__init__).parameters.items()}
    restated = {
        k
        for k, v in backbone.items()
        if k in defaults and not k.startswith("_") and v == defaults[k]
    }
    assert restated == {"out_channels", "norm"}
    assert instantiate(backbone).grounding_transformers["p5_to_p2"].mode == "global"


def test_per_level_overrides_of_the_common_model():
    """Arguments the config leaves at their defaults can be overridden (checked against FPT's
    signature), with a per-level list too; a misspelt one is refused naming the close key."""
    from fpt.config import ConfigError, check_overrides, load_config

    path = os.path.join(CONFIGS, "Shapes/fpt_mask_rcnn_tiny.py")
    overrides = ["model.backbone.kv_pool=[4,2,1,1]", "model.backbone.grounding_mode=local"]
    check_overrides(_load("Shapes/fpt_mask_rcnn_tiny.py"), overrides)
    cfg = load_config(path, overrides)
    assert cfg.model.backbone.kv_pool == [4, 2, 1, 1]
    neck = instantiate(cfg.model.backbone)
    assert [st.attention.kv_pool for st in neck.self_transformers.values()] == [4, 2, 1, 1]
    with pytest.raises(ConfigError, match="kv_pol"):
        load_config(path, ["model.backbone.kv_pol=2"])


def test_bfp_baseline_is_fpt_without_transformers():
    model = instantiate(_load("COCO/FPT/mask_rcnn_R_50_BFP_1x.py").model)
    neck = model.backbone
    assert not (neck.self_transformers or neck.grounding_transformers)
    assert not neck.rendering_transformers
    assert [c.in_channels for c in neck.fusion_convs.values()] == [256] * 4
    shapes = neck.output_shape()
    assert [(f, s.stride) for f, s in shapes.items()] == [
        ("p2", 4),
        ("p3", 8),
        ("p4", 16),
        ("p5", 32),
        ("p6", 64),
    ]


def test_faster_rcnn_common_model_has_no_mask_branch():
    model = instantiate(_load("common/models/faster_rcnn_fpt.py").model)
    assert not model.roi_heads.mask_on
    assert isinstance(model.backbone, FPT)


def test_shapes_fpn_baseline_differs_from_the_fpt_config_only_in_the_neck():
    """configs/Shapes/fpn_mask_rcnn_tiny.py: the FPT tiny recipe with detectron2's FPN, so the
    README's Shapes comparison is at equal data, heads, schedule and seed."""
    fpn, fpt_cfg = (_load(f"Shapes/{n}_mask_rcnn_tiny.py") for n in ("fpn", "fpt"))
    assert fpn.model.backbone._target_.__name__ == "FPN"
    assert LazyConfig.to_py(fpn.model.backbone.bottom_up) == LazyConfig.to_py(
        fpt_cfg.model.backbone.pyramid.bottom_up
    )
    assert fpn.model.backbone.out_channels == fpt_cfg.model.backbone.out_channels == 64
    for cfg in (fpn, fpt_cfg):
        del cfg.model.backbone
        cfg.train.output_dir = ""
    for key in ("model", "train", "optimizer", "lr_multiplier", "dataloader"):
        assert LazyConfig.to_py(fpn[key]) == LazyConfig.to_py(fpt_cfg[key]), key
