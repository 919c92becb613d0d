"""The half-width ResNet-18 of the tiny CPU configs: BasicBlocks [2, 2, 2, 2] at 32-256 channels
(64-512 in ResNet-18), BatchNorm, nothing frozen (trained from scratch)."""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.resnet import BasicBlock, ResNet


def make_resnet18_tiny(resnet, width=32):
    """Turn a LazyCall ``ResNet`` node (detectron2's R-50 config) into the half-width ResNet-18,
    in place: stem of ``width`` channels, stages ``width * 2**i`` wide, BatchNorm, freeze_at 0."""
    resnet.stem.out_channels = width
    resnet.stem.norm = "BN"
    resnet.stages = [
        L(ResNet.make_stage)(
            block_class=BasicBlock,
            num_blocks=2,
            in_channels=width * 2 ** max(i - 1, 0),
            out_channels=width * 2**i,
            stride_per_block=[1 if i == 0 else 2, 1],
            norm="BN",
        )
        for i in range(4)
    ]
    resnet.freeze_at = 0
    return resnet
