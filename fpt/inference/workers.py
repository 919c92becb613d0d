"""Prediction in worker processes, one per device: :class:`AsyncPredictor` (``demo.py
--num-workers N``), a stage of :func:`fpt.inference.pipeline.run_pipeline`.

The one module of :mod:`fpt.inference` that builds predictors from a config (in each worker,
and the class names in the parent): it imports :mod:`fpt.predictor`, and through it the config
layer, inside its functions.
"""

import itertools
import queue
import signal

import torch

from ..utils.text import first_line

__all__ = ["AsyncPredictor", "PredictorWorkerError", "default_devices"]

_POLL_S = 0.2  # how often a wait for results checks whether the workers are alive


class PredictorWorkerError(RuntimeError):
    """A predictor worker process could not start its predictor, or died; one line."""


def default_devices(num_workers):
    """One device per worker: the GPUs in turn when there are any, else the CPU."""
    gpus = torch.cuda.device_count()
    return [f"cuda:{i % gpus}" if gpus else "cpu" for i in range(num_workers)]


def _worker(cfg, device, predictor_kwargs, tasks, results):
    from fpt.predictor import Predictor  # the child process imports fpt (and its compat) here

    try:
        if str(device) == "cpu":
            torch.set_num_threads(max(1, torch.get_num_threads() // predictor_kwargs.pop("_share")))
        else:
            predictor_kwargs.pop("_share")
        predictor = Predictor(cfg, device=device, **predictor_kwargs)
    except Exception as e:  # reported to the parent as one line, which stops the pipeline
        results.put((None, f"predictor worker on {device}: {type(e).__name__}: {first_line(e)}"))
        return
    while True:
        task = tasks.get()
        if task is None:
            return
        key, images = task
        results.put((key, predictor.predict(images)))


def _exit_description(exitcode):
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class AsyncPredictor:
    """
    :class:`fpt.predictor.Predictor` in worker processes, one per device (e.g. one per GPU), as
    detectron2's demo ``AsyncPredictor``: batches are predicted concurrently and returned in order.
    A worker that cannot build its predictor, or dies (killed, out of memory), stops the run with
    :class:`PredictorWorkerError` within a fraction of a second; the others are then terminated.
    """

    worker_main = staticmethod(_worker)  # the workers' function (a test may swap it)

    def __init__(self, cfg, devices, **predictor_kwargs):
        """
        Args:
            cfg: the LazyConfig or yacs config to build each worker's predictor from.
            devices (list[str]): one worker process per entry (see :func:`default_devices`).
            predictor_kwargs: passed to each worker's ``Predictor`` (``batch_size``...).
        """
        from fpt.predictor import config_metadata

        self.metadata = config_metadata(cfg)
        self.batch_size = predictor_kwargs.get("batch_size", 1)
        ctx = torch.multiprocessing.get_context("spawn")
        self.tasks = ctx.Queue()
        self.results = ctx.Queue()
        kwargs = dict(predictor_kwargs, _share=len(devices))
        self.devices = list(devices)
        self.failed = False
        self.workers = [
            ctx.Process(
                target=self.worker_main,
                args=(cfg, d, dict(kwargs), self.tasks, self.results),
                daemon=True,
            )
            for d in devices
        ]
        for worker in self.workers:
            worker.start()

    def _check_workers(self):
        """Raise :class:`PredictorWorkerError` if a worker process is gone: until
        :meth:`close`, workers only exit by dying, and a dead worker's batches never come (or
        its share of the work silently goes to the others). A worker that could not build its
        predictor has left its one-line reason in the results queue before exiting: that is
        the error then."""
        for i, (worker, device) in enumerate(zip(self.workers, self.devices)):
            if not worker.is_alive():
                self.failed = True
                raise PredictorWorkerError(
                    self._reported_error()
                    or f"predictor worker {i} on {device} died "
                    f"({_exit_description(worker.exitcode)}); stopped"
                )

    def _reported_error(self):
        """A worker's own error message waiting in the results queue, or None."""
        while True:
            try:
                key, outputs = self.results.get_nowait()
            except queue.Empty:
                return None
            if key is None:
                return outputs

    def _get(self):
        while True:
            # checked before every wait, not only when results stop: a worker that died before
            # taking a task would otherwise go unnoticed while the others keep answering
            self._check_workers()
            try:
                key, outputs = self.results.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if key is None:
                self.failed = True
                raise PredictorWorkerError(outputs)
            return key, outputs

    def map(self, batches):
        """Yield ``(batch, outputs)`` for each batch (a list of images), in order, keeping two
        batches per worker in flight."""
        pending, done = {}, {}
        batches = iter(batches)
        for key in itertools.count():
            while len(pending) < 2 * len(self.workers):
                batch = next(batches, None)
                if batch is None:
                    break
                index = key + len(pending)
                pending[index] = batch
                self.tasks.put((index, batch))
            if key not in pending:
                return
            while key not in done:
                index, outputs = self._get()
                done[index] = outputs
            yield pending.pop(key), done.pop(key)

    def close(self):
        """Stop the workers: let them finish, or terminate them at once after a failure (a dead
        worker may have left the task queue locked)."""
        if not self.failed:
            for _ in self.workers:
                self.tasks.put(None)
        for worker in self.workers:
            if not self.failed:
                worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
