"""Predicting a stream of frames in batches: :func:`run_pipeline` overlaps decoding (a thread
iterating the frames), prediction (a thread calling the predictor, or the worker processes of an
:class:`~fpt.inference.workers.AsyncPredictor`) and the caller's thread, which consumes the
results in order."""

import itertools
import queue
import threading

from tqdm import tqdm

__all__ = ["run_pipeline"]

_END = object()  # marks the end of a stream between stages
_POLL_S = 0.2  # how often a blocked stage checks whether the pipeline was stopped


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
        if hasattr(predictor, "map"):  # an AsyncPredictor: batches in flight in its workers
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
