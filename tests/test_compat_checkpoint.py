"""fpt.compat.checkpoint: checkpoints load with an allow-list; anything else is refused in one
line unless the user opts in (FPT_UNSAFE_LOAD=1 / allow_unsafe_load / --unsafe-load)."""

import argparse
import collections
import logging
import os
import pickle
import types

import numpy as np
import pytest
import torch

import fpt  # noqa: F401
from detectron2.checkpoint import DetectionCheckpointer
from fpt.compat import checkpoint as ckpt


@pytest.fixture(autouse=True)
def _no_opt_in(monkeypatch):
    monkeypatch.delenv(ckpt.UNSAFE_LOAD_ENV, raising=False)


class _Numpy1Pickler(pickle._Pickler):
    """Writes numpy's globals under numpy 1's module names (numpy.core.*), as files saved with
    numpy 1 name them."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core"):
            self.write(
                pickle.GLOBAL + f"numpy.core{module[len('numpy._core'):]}\n"
                f"{name or obj.__qualname__}\n".encode()
            )
            self.memoize(obj)
            return
        super().save_global(obj, name)


_NUMPY1_PICKLE = types.SimpleNamespace(Pickler=_Numpy1Pickler, __name__="pickle")


def _third_party_checkpoint(model):
    """What MAE/DETR/timm training checkpoints hold: weights (here as numpy arrays), optimizer
    state, numpy scalars, the training args as an argparse.Namespace."""
    return {
        "model": collections.OrderedDict(
            weight=model.weight.detach().numpy() * 0 + 1.5,
            bias=np.array([0.25, -0.5], dtype=np.float32),
        ),
        "optimizer": torch.optim.AdamW(model.parameters()).state_dict(),
        "epoch": np.int64(799),
        "best_ap": np.float64(0.5),
        "args": argparse.Namespace(
            lr=1.5e-4,
            blr=None,
            input_size=224,
            output_dir="./out",
            mask_ratio=0.75,
            resume="",
            world_size=8,
            dist_url="env://",
        ),
        "version": torch.__version__,
    }


@pytest.mark.parametrize("written_by", ["numpy 2", "numpy 1"])
def test_third_party_checkpoint_loads_silently(tmp_path, caplog, written_by):
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "mae_like.pth"
    if written_by == "numpy 1":
        torch.save(_third_party_checkpoint(model), path, pickle_module=_NUMPY1_PICKLE)
        assert b"numpy.core.multiarray" in path.read_bytes()  # the file names numpy 1's module
    else:
        torch.save(_third_party_checkpoint(model), path)
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(model).load(str(path))
        loaded = ckpt.load_checkpoint(str(path))
    assert torch.allclose(model.weight, torch.full((2, 3), 1.5))
    assert torch.allclose(model.bias, torch.tensor([0.25, -0.5]))
    assert loaded["args"].mask_ratio == 0.75 and loaded["epoch"] == 799
    assert not [r for r in caplog.records if r.name == "fpt"]


class _Payload:
    """A pickle that runs code when loaded (here: creates a folder)."""

    def __init__(self, folder):
        self.folder = folder

    def __reduce__(self):
        return os.makedirs, (self.folder,)


def test_code_in_a_checkpoint_is_refused_in_one_line(tmp_path):
    model = torch.nn.Linear(3, 2)
    folder = str(tmp_path / "ran")
    path = tmp_path / "downloaded.pth"
    torch.save({"model": model.state_dict(), "extra": _Payload(folder)}, path)
    with pytest.raises(ckpt.UnsafeCheckpointError) as e:
        DetectionCheckpointer(model).load(str(path))
    message = str(e.value)
    assert "\n" not in message
    assert str(path) in message and "os.makedirs" in message
    assert "--unsafe-load" in message and "FPT_UNSAFE_LOAD=1" in message
    assert isinstance(e.value, pickle.UnpicklingError)  # callers that catch torch's error still do
    assert not os.path.exists(folder)


def test_a_class_outside_the_allow_list_is_named(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {}, "stats": collections.defaultdict(list, a=[1])}, path)
    with pytest.raises(
        ckpt.UnsafeCheckpointError,
        match=r"holds builtins\.list, " r"collections\.defaultdict: not on fpt's allow-list",
    ):
        ckpt.load_checkpoint(str(path))


@pytest.mark.parametrize("opt_in", ["environment", "function"])
def test_explicit_opt_in_loads_with_one_logged_line(tmp_path, monkeypatch, caplog, opt_in):
    folder = str(tmp_path / "ran")
    path = tmp_path / "trusted.pth"
    torch.save({"model": {}, "extra": _Payload(folder)}, path)
    if opt_in == "environment":
        monkeypatch.setenv(ckpt.UNSAFE_LOAD_ENV, "1")
    else:
        ckpt.allow_unsafe_load()
        assert os.environ[ckpt.UNSAFE_LOAD_ENV] == "1"  # inherited by worker processes
    with caplog.at_level(logging.WARNING, logger="fpt"):
        ckpt.load_checkpoint(str(path))
    assert os.path.isdir(folder)  # fully unpickled, as asked
    lines = [r.getMessage() for r in caplog.records if r.name == "fpt"]
    assert len(lines) == 1 and str(path) in lines[0] and "os.makedirs" in lines[0]
    ckpt.allow_unsafe_load(False)
    assert not ckpt.unsafe_load_allowed()


def test_a_damaged_file_gives_torchs_error(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"model": {"w": torch.ones(100)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(Exception) as e:
        ckpt.load_checkpoint(str(path))
    assert not isinstance(e.value, ckpt.UnsafeCheckpointError)


def test_detectron2_pkl_checkpoints_still_load(tmp_path):
    """Model-zoo .pkl files (Detectron pickles) are read by detectron2 itself, as before."""
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "model_final_abc.pkl"
    with open(path, "wb") as f:
        pickle.dump(
            {
                "model": {
                    "weight": np.full((2, 3), 2.0, np.float32),
                    "bias": np.zeros(2, np.float32),
                },
                "__author__": "Detectron2",
            },
            f,
        )
    DetectionCheckpointer(model).load(str(path))
    assert torch.allclose(model.weight, torch.full((2, 3), 2.0))


def test_detectron2_trainer_checkpoint_resumes(tmp_path):
    """A DefaultTrainer-style checkpoint (model, optimizer, scheduler, iteration, hooks)."""
    from detectron2.solver.lr_scheduler import WarmupMultiStepLR

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = WarmupMultiStepLR(optimizer, milestones=[5, 8], warmup_iters=2)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    scaler = torch.amp.GradScaler("cpu")
    DetectionCheckpointer(
        model, str(tmp_path), optimizer=optimizer, scheduler=scheduler, scaler=scaler
    ).save("model_0000000", iteration=0)
    loaded = ckpt.load_checkpoint(str(tmp_path / "model_0000000.pth"))
    assert loaded["iteration"] == 0 and loaded["scheduler"]["milestones"] == [5, 8]
