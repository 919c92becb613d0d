"""Stand-ins for ``fpt.inference.workers._worker`` (``AsyncPredictor.worker_main``) that start in
a blink: they import nothing heavy, so spawned worker processes are up at once."""

import os
import time


def echo_worker(cfg, device, predictor_kwargs, tasks, results):
    """Answer each batch with one ``{"index": i}`` per image."""
    while True:
        task = tasks.get()
        if task is None:
            return
        key, images = task
        results.put((key, [{"index": i} for i in range(len(images))]))


def dying_worker(cfg, device, predictor_kwargs, tasks, results):
    """Die at once, as a worker killed by the out-of-memory killer would."""
    os._exit(3)


def echo_or_die_worker(cfg, device, predictor_kwargs, tasks, results):
    """On the device named "die": take no task, and die after a second (by then the other
    worker is answering every batch); elsewhere echo."""
    if device == "die":
        time.sleep(1.0)
        os._exit(3)
    echo_worker(cfg, device, predictor_kwargs, tasks, results)


def failing_worker(cfg, device, predictor_kwargs, tasks, results):
    """Report that the predictor could not be built, then exit (as ``_worker`` does)."""
    results.put((None, f"predictor worker on {device}: ValueError: no such checkpoint"))
