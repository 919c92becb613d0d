"""Our DETR, run as users run it (``Predictor``: config test resize, RGB, padded batch), against a
reference written from official DETR's code structure: torchvision's ResNet with
FrozenBatchNorm2d under ``backbone.0.body``, DETR's PIL resize (``get_size_with_aspect_ratio``),
``ToTensor`` + ``Normalize``, ``NestedTensor`` padding with a nearest-resized mask, the sine
encoding, ``nn.MultiheadAttention`` / Cream's RPE attention (materialized tables), and DETR's
``PostProcess`` (softmax without the last class, boxes times the original size).

The reference loads the *official* layout with ``load_state_dict(strict=True)``, so the renames
documented for the converter are checked against torchvision's real module names too.
"""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

from detectron2.config import LazyCall as L

from fpt.config import load_config
from fpt.data.detr_mapper import DetrResize
from fpt.layers.irpe import bucket_ids, parse_rpe_spec
from fpt.predictor import Predictor
from support import COCO_CATEGORY_IDS, detr_official_name as official_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "COCO", "DETR", "detr_r50_300ep.py")
D, HEADS, QUERIES, TEST_SIZE, MAX_SIZE = 64, 4, 12, 320, 533


# ---- the reference, after facebookresearch/detr models/{backbone,detr,transformer}.py ----
def official_resize(image, size, max_size):
    """DETR datasets/transforms.py ``resize`` for a PIL image."""
    w, h = image.size
    short, long = float(min(w, h)), float(max(w, h))
    if long / short * size > max_size:
        size = int(round(max_size * short / long))
    if (w <= h and w == size) or (h <= w and h == size):
        oh, ow = h, w
    elif w < h:
        ow, oh = size, int(size * h / w)
    else:
        oh, ow = size, int(size * w / h)
    return TF.resize(image, [oh, ow])


def official_position_encoding(mask, num_pos_feats):
    not_mask = ~mask
    y_embed = not_mask.cumsum(1, dtype=torch.float32)
    x_embed = not_mask.cumsum(2, dtype=torch.float32)
    y_embed = y_embed / (y_embed[:, -1:, :] + 1e-6) * 2 * math.pi
    x_embed = x_embed / (x_embed[:, :, -1:] + 1e-6) * 2 * math.pi
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32)
    dim_t = 10000 ** (2 * (dim_t // 2) / num_pos_feats)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class CreamRPETable(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.lookup_table_weight = nn.Parameter(torch.zeros(shape))


class CreamRPEAttention(nn.Module):
    """Cream's RPEMultiheadAttention for ctx tables: the lookups materialized per (i, j)."""

    def __init__(self, spec):
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.zeros(3 * D, D))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * D))
        self.out_proj = nn.Linear(D, D)
        self.spec = parse_rpe_spec(spec)
        side = 2 * int(2 * self.spec.ratio) + 1
        nb = side * side if self.spec.method == "product" else side
        heads_p = 1 if self.spec.shared_head else HEADS
        for c in self.spec.rpe_on:
            shape = (heads_p, nb, D // HEADS) if c == "v" else (heads_p, D // HEADS, nb)
            setattr(self, f"rpe_{c}", CreamRPETable(shape))

    def forward(self, query, key, value, key_padding_mask, hw):
        L, B, _ = query.shape
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = F.linear(query, w_q, b_q) * (D // HEADS) ** -0.5
        k, v = F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
        q, k, v = (t.reshape(L, B * HEADS, -1).transpose(0, 1) for t in (q, k, v))
        attn = torch.bmm(q, k.transpose(1, 2)).view(B, HEADS, L, L)
        ids = bucket_ids(*hw, self.spec.method, self.spec.ratio)
        qh, kh = q.view(B, HEADS, L, -1), k.view(B, HEADS, L, -1) * (D // HEADS) ** -0.5
        if "k" in self.spec.rpe_on:  # q_i . Wk[:, b(i, j)]
            table = self.rpe_k.lookup_table_weight[:, :, ids]  # (h', d, L, L)
            attn = attn + torch.einsum("bhid,hdij->bhij", qh, table.expand(HEADS, -1, -1, -1))
        if "q" in self.spec.rpe_on:  # (s k_j) . Wq[:, b(j, i)]
            table = self.rpe_q.lookup_table_weight[:, :, ids.t()]
            attn = attn + torch.einsum("bhjd,hdij->bhij", kh, table.expand(HEADS, -1, -1, -1))
        attn = attn.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        attn = attn.softmax(-1)
        out = attn @ v.view(B, HEADS, L, -1)
        if "v" in self.spec.rpe_on:
            table = self.rpe_v.lookup_table_weight[:, ids]  # (h', L, L, d)
            out = out + torch.einsum("bhij,hijd->bhid", attn, table.expand(HEADS, -1, -1, -1))
        out = out.permute(2, 0, 1, 3).reshape(L, B, D)
        return self.out_proj(out)


class EncoderLayer(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.self_attn = CreamRPEAttention(spec) if spec else nn.MultiheadAttention(D, HEADS)
        self.linear1, self.linear2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D)
        self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.spec = spec

    def forward(self, src, mask, pos, hw):
        q = k = src + pos
        if self.spec:
            src2 = self.self_attn(q, k, src, mask, hw)
        else:
            src2 = self.self_attn(q, k, value=src, key_padding_mask=mask)[0]
        src = self.norm1(src + src2)
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class DecoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(D, HEADS)
        self.multihead_attn = nn.MultiheadAttention(D, HEADS)
        self.linear1, self.linear2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(D), nn.LayerNorm(D), nn.LayerNorm(D)

    def forward(self, tgt, memory, mask, pos, query_pos):
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(q, k, value=tgt)[0])
        tgt2 = self.multihead_attn(tgt + query_pos, memory + pos, memory, key_padding_mask=mask)[0]
        tgt = self.norm2(tgt + tgt2)
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class OfficialDETR(nn.Module):
    def __init__(self, spec):
        super().__init__()
        resnet = torchvision.models.resnet18(norm_layer=FrozenBatchNorm2d)
        body = nn.Module()
        body.body = IntermediateLayerGetter(resnet, return_layers={"layer4": "0"})
        self.backbone = nn.ModuleList([body])
        self.input_proj = nn.Conv2d(512, D, 1)
        self.query_embed = nn.Embedding(QUERIES, D)
        self.transformer = nn.Module()
        self.transformer.encoder = nn.Module()
        self.transformer.encoder.layers = nn.ModuleList(EncoderLayer(spec) for _ in range(2))
        self.transformer.decoder = nn.Module()
        self.transformer.decoder.layers = nn.ModuleList(DecoderLayer() for _ in range(2))
        self.transformer.decoder.norm = nn.LayerNorm(D)
        self.class_embed = nn.Linear(D, 92)
        self.bbox_embed = nn.Module()
        self.bbox_embed.layers = nn.ModuleList([nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, 4)])

    @torch.no_grad()
    def forward(self, pil_images):
        tensors = [
            TF.normalize(
                TF.to_tensor(official_resize(im, TEST_SIZE, MAX_SIZE)),
                [0.485, 0.456, 0.406],
                [0.229, 0.224, 0.225],
            )
            for im in pil_images
        ]
        H = max(t.shape[1] for t in tensors)
        W = max(t.shape[2] for t in tensors)
        batch = torch.zeros(len(tensors), 3, H, W)
        mask = torch.ones(len(tensors), H, W, dtype=torch.bool)
        for i, t in enumerate(tensors):
            batch[i, :, : t.shape[1], : t.shape[2]] = t
            mask[i, : t.shape[1], : t.shape[2]] = False
        src = self.backbone[0].body(batch)["0"]
        mask = F.interpolate(mask[None].float(), size=src.shape[-2:]).to(torch.bool)[0]
        pos = official_position_encoding(mask, D // 2)
        B, _, h, w = src.shape
        src = self.input_proj(src).flatten(2).permute(2, 0, 1)
        pos, mask = pos.flatten(2).permute(2, 0, 1), mask.flatten(1)
        for layer in self.transformer.encoder.layers:
            src = layer(src, mask, pos, (h, w))
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, B, 1)
        tgt = torch.zeros_like(query_pos)
        for layer in self.transformer.decoder.layers:
            tgt = layer(tgt, src, mask, pos, query_pos)
        hs = self.transformer.decoder.norm(tgt).transpose(0, 1)
        logits = self.class_embed(hs)
        x = hs
        for i, layer in enumerate(self.bbox_embed.layers):
            x = layer(x) if i == 2 else F.relu(layer(x))
        boxes = x.sigmoid()
        # PostProcess
        scores, labels = F.softmax(logits, -1)[..., :-1].max(-1)
        cx, cy, bw, bh = boxes.unbind(-1)
        xyxy = torch.stack([cx - 0.5 * bw, cy - 0.5 * bh, cx + 0.5 * bw, cy + 0.5 * bh], -1)
        sizes = torch.tensor([[im.size[0], im.size[1]] * 2 for im in pil_images], dtype=torch.float)
        return scores, labels, xyxy * sizes[:, None, :]


# ---- the comparison -------------------------------------------------------------------
def small_config(spec, checkpoint):
    cfg = load_config(CONFIG, [f"train.init_checkpoint={checkpoint}", "train.device=cpu"])
    backbone = cfg.model.backbone
    backbone.stages.depth = 18
    del backbone.stages.stride_in_1x1  # BasicBlock
    cfg.model.transformer.update(
        d_model=D,
        nhead=HEADS,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=2 * D,
        enc_rpe=spec,
    )
    cfg.model.position_encoding.num_pos_feats = D // 2
    cfg.model.num_queries = QUERIES
    cfg.dataloader.test.mapper.augmentations = [
        L(DetrResize)(short_edge_length=TEST_SIZE, max_size=MAX_SIZE)
    ]
    return cfg


def photo(h, w, seed):
    """A smooth random RGB image (resizing it is not trivially exact)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(h // 16, 2), max(w // 16, 2), 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


@pytest.mark.parametrize(
    "spec", [None, "rpe-2.0-product-ctx-1-k", "rpe-1.9-product-ctx-0-qkv", "rpe-2.0-euc-ctx-1-qk"]
)
def test_predictor_matches_the_official_reference(tmp_path, spec):
    from detectron2.config import instantiate

    torch.manual_seed(0)
    cfg = small_config(spec, "")
    model = instantiate(cfg.model)
    with torch.no_grad():  # non-trivial BN statistics and tables
        for name, b in model.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 2.0)
            elif "running_mean" in name:
                b.uniform_(-0.2, 0.2)
        for name, p in model.named_parameters():
            if "lookup_table" in name:
                p.normal_(0, 0.1)
    checkpoint = tmp_path / "ours.pth"
    torch.save({"model": model.state_dict()}, checkpoint)

    reference = OfficialDETR(spec).eval()
    official = {}
    for key, value in model.state_dict().items():
        if key.startswith("class_embed."):  # ids without a category never win in a trained model
            full = torch.full((92,) + tuple(value.shape[1:]), -30.0 if value.dim() == 1 else 0.0)
            full[torch.as_tensor(COCO_CATEGORY_IDS)] = value[:80]
            full[91] = value[80]
            value = full
        official[official_name(key)] = value
    reference.load_state_dict(official, strict=True)

    predictor = Predictor(
        small_config(spec, str(checkpoint)), device="cpu", batch_size=2, image_format="RGB"
    )
    images = [photo(300, 451, 1), photo(480, 640, 2)]  # 320x481 and 320x426 network inputs
    assert [official_resize(Image.fromarray(im), TEST_SIZE, MAX_SIZE).size for im in images] == [
        (481, 320),
        (426, 320),
    ]
    outputs = predictor.predict(images)
    scores, labels, boxes = reference([Image.fromarray(im) for im in images])
    for i, (out, im) in enumerate(zip(outputs, images)):
        inst = out["instances"]
        assert len(inst) == QUERIES
        torch.testing.assert_close(inst.scores, scores[i], rtol=1e-4, atol=1e-5)
        ids = torch.as_tensor(COCO_CATEGORY_IDS)[inst.pred_classes]
        assert torch.equal(ids, labels[i])
        h, w = im.shape[:2]
        expected = boxes[i].clone()
        expected[:, 0::2] = expected[:, 0::2].clamp(0, w)
        expected[:, 1::2] = expected[:, 1::2].clamp(0, h)
        torch.testing.assert_close(inst.pred_boxes.tensor, expected, rtol=1e-4, atol=1e-3)
