"""Helpers shared by the model tests (importable as ``support``: pytest puts tests/ on sys.path)."""
import torch

from detectron2.utils.events import EventStorage


def train_steps(model, batch, iters, optimizer):
    """``iters`` optimizer steps of ``model`` (train mode) on one fixed ``batch``.

    Every total loss must be finite. Returns (the total loss of each step, the last loss dict).
    """
    model.train()
    totals = []
    for it in range(iters):
        with EventStorage(it):
            loss_dict = model(batch)
        loss = sum(loss_dict.values())
        assert torch.isfinite(loss), {k: float(v.detach()) for k, v in loss_dict.items()}
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        totals.append(loss.item())
    return totals, loss_dict


def assert_loss_falls(totals, factor=0.8):
    """The mean of the last two losses is below ``factor`` x the mean of the first two."""
    assert sum(totals[-2:]) / 2 < factor * sum(totals[:2]) / 2, totals
