"""The shapes set in a distributed run (review of issue 11, item 6l): only local rank 0
generates it; the other ranks of the machine wait for it instead of writing the same files."""

import importlib
import logging
import os
import threading
import time

import pytest

from fpt.data import DatasetError

shapes = importlib.import_module("fpt.data.shapes")

SPLITS = {"shapes_train": (0, 3), "shapes_val": (1, 2)}


def _as_rank(monkeypatch, generator_thread_name):
    """Local rank 0 in the thread of that name, 1 everywhere else."""
    monkeypatch.setattr(
        shapes,
        "_local_rank",
        lambda: 0 if threading.current_thread().name == generator_thread_name else 1,
    )


def test_other_local_ranks_wait_for_local_rank_0(monkeypatch, tmp_path, caplog):
    _as_rank(monkeypatch, "rank0")
    generated = {}

    def rank0():
        time.sleep(0.5)  # the other rank asks first
        generated["folder"] = shapes.generate_shapes(str(tmp_path), size=32, splits=SPLITS)

    thread = threading.Thread(target=rank0, name="rank0")
    with caplog.at_level(logging.INFO, logger="fpt.data.shapes"):
        thread.start()
        folder = shapes.generate_shapes(str(tmp_path), size=32, splits=SPLITS, timeout=60)
        thread.join()
    assert folder == generated["folder"] and os.path.isfile(os.path.join(folder, "meta.json"))
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("Generated the shapes dataset") for m in messages) == 1
    assert any(m.startswith("Waiting for local rank 0") for m in messages)


def test_a_waiting_rank_writes_nothing_and_gives_up_with_one_line(monkeypatch, tmp_path):
    _as_rank(monkeypatch, "no such thread")
    start = time.monotonic()
    with pytest.raises(DatasetError, match=r"local rank 0 did not generate .* within 0.5 s"):
        shapes.generate_shapes(str(tmp_path), size=32, splits=SPLITS, timeout=0.5)
    assert time.monotonic() - start < 5
    assert os.listdir(tmp_path) == []  # no half-written or temporary folder


def test_outside_a_distributed_run_this_process_generates(tmp_path):
    assert shapes._local_rank() == 0
    folder = shapes.generate_shapes(str(tmp_path), size=32, splits=SPLITS)
    assert os.path.isfile(os.path.join(folder, "shapes_val.json"))
