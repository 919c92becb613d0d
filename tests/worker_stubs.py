"""Stand-ins for ``fpt.inference.workers._worker`` (``AsyncPredictor.worker_main``) that start in
a blink: they import nothing heavy, so spawned worker processes are up at once."""

import os


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
