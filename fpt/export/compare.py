"""Does an exported model give the eager model's predictions? The tolerance, and the comparison.

Predictions are compared as the user gets them: in original image coordinates, after
detectron2's post-processing (pasted masks, resized segmentation). Instances are matched one to
one (same class, scores and boxes within tolerance), so equal-score instances listed in another
order still match; an instance without a match is accepted only at the cut-off (its score within
tolerance of the lowest score shown, where the score threshold or the top-k limit may keep one
and drop the other).
"""

import torch

__all__ = ["TOLERANCE", "compare_predictions", "describe_tolerance"]

MAX_AT_CUTOFF = 2  # unmatched instances accepted at the cut-off, per side

TOLERANCE = {
    "box_px": 0.05,  # box corners, pixels of the original image
    "score": 1e-3,  # scores (probabilities)
    "mask_iou": 0.99,  # pasted masks of matched instances: IoU at least this...
    "mask_pixels": 4,  # ...or at most this many pixels differ (tiny masks)
    "sem_seg_atol": 1e-3,  # segmentation logits: |a - b| <= atol + rtol |a|
    "sem_seg_rtol": 1e-3,
}


def describe_tolerance(tol=TOLERANCE):
    return (
        f"boxes within {tol['box_px']} px, scores within {tol['score']}, same classes, masks "
        f"IoU >= {tol['mask_iou']} (or <= {tol['mask_pixels']} pixels differ), segmentation "
        f"logits within {tol['sem_seg_atol']} + {tol['sem_seg_rtol']} x |logit|"
    )


def compare_predictions(expected, got, tol=TOLERANCE):
    """
    Args:
        expected, got (dict): one image's outputs, ``instances`` and/or ``sem_seg`` (on the CPU).
    Returns:
        (problems, stats): a list of one-line problems (empty: they agree) and the measured
        differences (``max_box_px``, ``max_score``, ``min_mask_iou``, ``instances``, ...).
    """
    problems, stats = [], {}
    for key in ("instances", "sem_seg"):
        if (key in expected) != (key in got):
            problems.append(f"'{key}' is in one output only")
    if "instances" in expected and "instances" in got:
        problems += _compare_instances(expected["instances"], got["instances"], tol, stats)
    if "sem_seg" in expected and "sem_seg" in got:
        problems += _compare_sem_seg(expected["sem_seg"], got["sem_seg"], tol, stats)
    return problems, stats


def _compare_instances(a, b, tol, stats):
    if a.image_size != b.image_size:
        return [f"image size {tuple(b.image_size)} instead of {tuple(a.image_size)}"]
    fields_a, fields_b = set(a.get_fields()), set(b.get_fields())
    if fields_a != fields_b:
        return [f"fields {sorted(fields_b)} instead of {sorted(fields_a)}"]
    boxes_a, boxes_b = a.pred_boxes.tensor.float(), b.pred_boxes.tensor.float()
    box_diff = (boxes_a[:, None] - boxes_b[None]).abs().amax(-1) if len(a) and len(b) else None
    stats.update(instances=len(a), max_box_px=0.0, max_score=0.0)
    matches = []
    if box_diff is not None:
        score_diff = (a.scores[:, None].float() - b.scores[None].float()).abs()
        ok = (
            (box_diff <= tol["box_px"])
            & (score_diff <= tol["score"])
            & (a.pred_classes[:, None] == b.pred_classes[None])
        )
        used = torch.zeros(len(b), dtype=torch.bool)
        for i in range(len(a)):
            candidates = (ok[i] & ~used).nonzero().flatten()
            if len(candidates):
                j = int(candidates[box_diff[i, candidates].argmin()])
                used[j] = True
                matches.append((i, j))
                stats["max_box_px"] = max(stats["max_box_px"], float(box_diff[i, j]))
                stats["max_score"] = max(stats["max_score"], float(score_diff[i, j]))
    problems = []
    lowest = min([float(x.scores.min()) for x in (a, b) if len(x)], default=0.0)
    others = {"eager": (b, box_diff), "exported": (a, None if box_diff is None else box_diff.T)}
    matched = {"eager": {i for i, _ in matches}, "exported": {j for _, j in matches}}
    for side, instances in (("eager", a), ("exported", b)):
        unmatched = [k for k in range(len(instances)) if k not in matched[side]]
        at_cutoff = [k for k in unmatched if float(instances.scores[k]) <= lowest + tol["score"]]
        if len(unmatched) > len(at_cutoff) or len(at_cutoff) > MAX_AT_CUTOFF:
            k = next((k for k in unmatched if k not in at_cutoff), unmatched[0])
            problems.append(_unmatched(side, instances, k, *others[side]))
        stats[f"unmatched_{side}"] = len(unmatched)
    if a.has("pred_masks") and b.has("pred_masks") and matches:
        ious, bad_mask = [], None
        for i, j in matches:
            ma, mb = a.pred_masks[i].bool(), b.pred_masks[j].bool()
            union = int((ma | mb).sum())
            differ = int((ma ^ mb).sum())
            iou = 1.0 if union == 0 else 1.0 - differ / union
            ious.append(iou)
            if iou < tol["mask_iou"] and differ > tol["mask_pixels"] and not bad_mask:
                bad_mask = f"mask of instance {i} differs: IoU {iou:.3f}, {differ} pixels"
        stats["min_mask_iou"] = min(ious)
        problems += [bad_mask] if bad_mask else []
    return problems


def _unmatched(side, instances, k, other, diff):
    box = [round(float(v), 1) for v in instances.pred_boxes.tensor[k]]
    what = (
        f"{side} instance {k} (class {int(instances.pred_classes[k])}, score "
        f"{float(instances.scores[k]):.4f}, box {box}) has no counterpart"
    )
    if diff is not None and diff.shape[1]:
        j = int(diff[k].argmin())
        what += (
            f"; nearest: class {int(other.pred_classes[j])}, score {float(other.scores[j]):.4f}, "
            f"box off by {float(diff[k, j]):.3g} px"
        )
    return what


def _compare_sem_seg(a, b, tol, stats):
    if a.shape != b.shape:
        return [f"segmentation of shape {tuple(b.shape)} instead of {tuple(a.shape)}"]
    a, b = a.float(), b.float()
    diff = (a - b).abs()
    stats.update(
        max_sem_seg=float(diff.max()) if diff.numel() else 0.0,
        sem_seg_label_agreement=float((a.argmax(0) == b.argmax(0)).float().mean()),
    )
    bad = diff > tol["sem_seg_atol"] + tol["sem_seg_rtol"] * a.abs()
    if bad.any():
        count = int(bad.sum())
        return [f"segmentation logits differ by up to {float(diff.max()):.3g} at {count} values"]
    return []
