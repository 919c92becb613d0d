"""Videos and webcams: frames are decoded, predicted in batches and consumed (drawn, written) in
a pipeline of three stages that overlap: a decoding thread, a prediction thread (or worker
processes, :class:`AsyncPredictor`), and the caller's thread, which consumes the results in order.
"""

import itertools
import queue
import signal
import threading

import cv2
import torch
from tqdm import tqdm

from ..config_loading import first_line

__all__ = [
    "VideoError",
    "VideoSource",
    "AsyncPredictor",
    "PredictorWorkerError",
    "run_pipeline",
    "default_devices",
]

_END = object()  # marks the end of a stream between stages
_POLL_S = 0.2  # how often a blocked stage checks whether the pipeline was stopped


class VideoError(ValueError):
    """A video file or camera that cannot be opened; the message is one line."""


class PredictorWorkerError(RuntimeError):
    """A predictor worker process could not start its predictor, or died; one line."""


class VideoSource:
    """Frames of a video file or a camera (``int`` index), as ``(H, W, 3)`` uint8 RGB arrays."""

    def __init__(self, source):
        self.name = f"camera {source}" if isinstance(source, int) else str(source)
        self.capture = cv2.VideoCapture(source)
        if not self.capture.isOpened():
            raise VideoError(f"{self.name}: cannot open (not a video, or no such camera)")
        self.width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 else 30.0  # cameras may not report it
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.num_frames = count if count > 0 and not isinstance(source, int) else None

    def __iter__(self):
        while True:
            ok, frame = self.capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self):
        self.capture.release()


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
        :meth:`close`, workers only exit by dying, and a dead worker's batches never come."""
        for i, (worker, device) in enumerate(zip(self.workers, self.devices)):
            if not worker.is_alive():
                self.failed = True
                raise PredictorWorkerError(
                    f"predictor worker {i} on {device} died "
                    f"({_exit_description(worker.exitcode)}); stopped"
                )

    def _get(self):
        while True:
            try:
                key, outputs = self.results.get(timeout=_POLL_S)
            except queue.Empty:
                self._check_workers()
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
                batch = next(batches, _END)
                if batch is _END:
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


def _stage(target, errors, stop):
    def run():
        try:
            target()
        except BaseException as e:  # handed to the consuming thread, which re-raises it
            errors.append(e)
            stop.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _put(q, item, stop):
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(q, stop):
    while True:
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            if stop.is_set():
                return _END


def run_pipeline(frames, predictor, consume, batch_size=4, total=None, desc="frames", unit="frame"):
    """
    Predict a stream of frames in batches and hand each frame with its prediction to ``consume``,
    in order. Decoding (iterating ``frames``), prediction and ``consume`` run concurrently.

    Args:
        frames (iterable[np.ndarray]): ``(H, W, 3)`` uint8 images, in the predictor's
            ``image_format``.
        predictor: a :class:`fpt.predictor.Predictor` or an :class:`AsyncPredictor`.
        consume (callable): ``consume(frame, outputs)``; returning ``False`` stops the pipeline
            (e.g. a key pressed in a window).
        batch_size (int): frames per prediction batch.
        total (int or None): number of frames, for the progress bar.
        desc, unit (str): the progress bar's label and unit (it shows units/s).

    Returns:
        int: the number of frames consumed.
    """
    stop, errors = threading.Event(), []
    batches_q, results_q = queue.Queue(maxsize=2), queue.Queue(maxsize=2)

    def decode():
        iterator = iter(frames)
        while not stop.is_set():
            batch = list(itertools.islice(iterator, batch_size))
            if not batch or not _put(batches_q, batch, stop):
                break
        _put(batches_q, _END, stop)

    def batches():
        while (batch := _get(batches_q, stop)) is not _END:
            yield batch

    def predict():
        if isinstance(predictor, AsyncPredictor):
            stream = predictor.map(batches())
        else:
            stream = ((batch, predictor.predict(batch)) for batch in batches())
        for item in stream:
            if not _put(results_q, item, stop):
                break
        _put(results_q, _END, stop)

    threads = [_stage(decode, errors, stop), _stage(predict, errors, stop)]
    count = 0
    try:
        with tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True) as progress:
            while not stop.is_set() and (item := _get(results_q, stop)) is not _END:
                for frame, outputs in zip(*item):
                    count += 1
                    progress.update(1)
                    if consume(frame, outputs) is False:
                        stop.set()
                        break
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return count
