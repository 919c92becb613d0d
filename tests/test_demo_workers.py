"""``demo.py --num-workers N`` when a predictor worker process dies (review of issue 11, item
6m): a one-line error within seconds, not a wait forever."""

import os
import signal
import threading
import time

import numpy as np
from PIL import Image
from yacs.config import CfgNode

import worker_stubs
from fpt.inference import AsyncPredictor, PredictorWorkerError
from test_demo import S, demo

CFG = CfgNode({"DATASETS": CfgNode({"TEST": []})})  # no model: the stand-in workers need none


class EchoPredictor(AsyncPredictor):
    worker_main = staticmethod(worker_stubs.echo_worker)


class DyingPredictor(AsyncPredictor):
    worker_main = staticmethod(worker_stubs.dying_worker)


class HalfDeadPredictor(AsyncPredictor):
    worker_main = staticmethod(worker_stubs.echo_or_die_worker)


class FailingPredictor(AsyncPredictor):
    worker_main = staticmethod(worker_stubs.failing_worker)


def _consume(stream, outcome):
    try:
        for _ in stream:
            pass
    except Exception as e:  # noqa: BLE001  (handed to the test)
        outcome["error"] = e


def test_a_killed_worker_stops_the_stream_within_seconds():
    predictor = EchoPredictor(CFG, ["cpu", "cpu"], batch_size=1)
    try:
        batches = ([np.zeros((2, 2, 3), np.uint8)] for _ in range(10**6))
        stream = predictor.map(batches)
        next(stream)  # both workers are up and answering
        os.kill(predictor.workers[1].pid, signal.SIGKILL)
        outcome = {}
        consumer = threading.Thread(target=_consume, args=(stream, outcome), daemon=True)
        start = time.monotonic()
        consumer.start()
        consumer.join(timeout=20)
        assert not consumer.is_alive(), "still waiting for the dead worker"
        assert time.monotonic() - start < 5
        assert isinstance(outcome.get("error"), PredictorWorkerError)
        assert (
            str(outcome["error"]) == "predictor worker 1 on cpu died (killed by SIGKILL); stopped"
        )
    finally:
        start = time.monotonic()
        predictor.close()
        assert time.monotonic() - start < 5  # the survivor is terminated, not waited for
    assert not any(w.is_alive() for w in predictor.workers)


def _run_until_error(predictor, timeout=20):
    """Consume an endless stream in a thread; the error that ended it (the thread must end)."""
    try:
        batches = ([np.zeros((2, 2, 3), np.uint8)] for _ in range(10**6))
        outcome = {}
        consumer = threading.Thread(
            target=_consume, args=(predictor.map(batches), outcome), daemon=True
        )
        consumer.start()
        consumer.join(timeout=timeout)
        assert not consumer.is_alive(), "the stream went on"
        return outcome.get("error")
    finally:
        predictor.close()


def test_a_worker_dead_before_its_first_task_stops_the_stream():
    """The live worker could serve every batch alone; the run must still stop (and not
    silently continue at half the workers)."""
    error = _run_until_error(HalfDeadPredictor(CFG, ["cpu", "die"], batch_size=1))
    assert isinstance(error, PredictorWorkerError)
    assert str(error) == "predictor worker 1 on die died (exit code 3); stopped"


def test_a_worker_that_cannot_build_its_predictor_says_why():
    error = _run_until_error(FailingPredictor(CFG, ["cpu"], batch_size=1))
    assert str(error) == "predictor worker on cpu: ValueError: no such checkpoint"


def test_demo_reports_a_dead_worker_in_one_line(monkeypatch, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    monkeypatch.setattr(
        demo, "build_predictor", lambda args, cfg: DyingPredictor(CFG, ["cpu"], batch_size=1)
    )
    argv = ["--config-file", S.TINY_LAZY, "--input", str(image), "--output", str(tmp_path / "o")]
    start = time.monotonic()
    assert demo.main(argv + ["--num-workers", "1"]) == 2
    assert time.monotonic() - start < 20
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: predictor worker 0 on cpu died (exit code 3); stopped"
