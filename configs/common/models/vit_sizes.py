"""ViT-B/L/H as ViTDet trains them: width, depth, heads, drop path, the four global-attention
blocks, layer-wise lr decay and the MAE ImageNet weights (upstream's ``mask_rcnn_vitdet_{b,l,h}``).
"""

from functools import partial

from fpt.modeling import get_vit_lr_decay_rate

# size: (embed_dim, depth, num_heads, drop_path_rate, lr_decay_rate, MAE checkpoint)
VIT_SIZES = {
    "B": (768, 12, 12, 0.1, 0.7, "mae_pretrain_vit_base.pth"),
    "L": (1024, 24, 16, 0.4, 0.8, "mae_pretrain_vit_large.pth"),
    "H": (1280, 32, 16, 0.5, 0.9, "mae_pretrain_vit_huge_p14to16.pth"),
}


def set_vit_size(size, model, optimizer, train):
    """Make the ViTDet ``model`` (``model.backbone.net`` a LazyCall ViT), its ``optimizer`` (lr
    decay) and ``train.init_checkpoint`` (MAE weights) ViT-``size``, in place.

    The last block of each quarter uses global attention (B: 2, 5, 8, 11; L: 5, 11, 17, 23;
    H: 7, 15, 23, 31), the others 14x14 windows. The MAE weights load as upstream's
    (``detectron2://...?matching_heuristics=True``; ``fpt.compat`` adds the suffix that detectron2
    0.6 lacks). Offline: convert a local copy once with ``tools/convert_vitdet_checkpoint.py``
    and set ``train.init_checkpoint`` to it.
    """
    embed_dim, depth, num_heads, drop_path_rate, lr_decay_rate, mae = VIT_SIZES[size]
    net = model.backbone.net
    net.embed_dim, net.depth, net.num_heads = embed_dim, depth, num_heads
    net.drop_path_rate = drop_path_rate
    net.window_block_indexes = [i for i in range(depth) if (i + 1) % (depth // 4)]
    optimizer.params.lr_factor_func = partial(
        get_vit_lr_decay_rate, num_layers=depth, lr_decay_rate=lr_decay_rate
    )
    train.init_checkpoint = f"detectron2://ImageNetPretrained/MAE/{mae}?matching_heuristics=True"
