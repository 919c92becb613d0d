"""Training metrics to TensorBoard, ``metrics.json``, Weights & Biases and MLflow
(``train.loggers``, yacs ``LOGGERS``; checked by :func:`fpt.config.loggers.check_loggers`).

The trackers are detectron2 ``EventWriter``-s on the main process, run by
:class:`PeriodicWriter` with the other writers: every scalar the ``EventStorage`` holds (losses,
learning rate, timings, evaluation results: whatever the hooks put there), with the values and
iterations ``metrics.json`` has (smoothed over the same window). A new tracked run also gets the
saved config (``config.yaml``, as parameters and as a file); the results files
(``inference/results*.json``) are uploaded at the end, and each checkpoint when
``log_checkpoints`` is on. The run ids are kept in ``<output_dir>/tracking.json``: a run resumed
from a checkpoint (``--resume``) continues the same tracked runs.
"""

import glob
import json
import logging
import os
import re
import time
from collections import defaultdict

import yaml
from omegaconf import OmegaConf

from detectron2.engine import hooks
from detectron2.utils.events import (
    CommonMetricPrinter,
    EventWriter,
    JSONWriter,
    TensorboardXWriter,
    get_event_storage,
)

from fpt.utils.text import first_line

__all__ = [
    "MLflowWriter",
    "PeriodicWriter",
    "TrackingError",
    "TrackingWriter",
    "WandbWriter",
    "build_writers",
]

logger = logging.getLogger(__name__)

RUN_IDS = "tracking.json"  # in the output dir: {tracker: run id}


def build_writers(output_dir, max_iter, loggers, window_size=20):
    """The console printer, then one writer per entry of ``loggers`` (``{name: options}``, from
    :func:`~fpt.config.loggers.check_loggers`)."""
    os.makedirs(output_dir, exist_ok=True)  # (detectron2 main's TensorboardXWriter is lazy)
    writers = [CommonMetricPrinter(max_iter)]
    for name, options in loggers.items():
        if name == "tensorboard":
            writers.append(TensorboardXWriter(output_dir, window_size=window_size))
        elif name == "json":
            path = os.path.join(output_dir, "metrics.json")
            writers.append(JSONWriter(path, window_size=window_size))
        else:
            writer = {"mlflow": MLflowWriter, "wandb": WandbWriter}[name]
            writers.append(writer(output_dir, window_size=window_size, **options))
    return writers


class _ConfigLoader(yaml.SafeLoader):
    """A safe YAML loader that reads a node of any other tag (``LazyConfig.save`` writes e.g.
    ``!!python/object/new:...ShapeSpec``) as the plain mapping, list or scalar it holds."""


def _plain(loader, tag_suffix, node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_ConfigLoader.add_multi_constructor("", _plain)


def read_config(path):
    """The saved config file (``config.yaml``) as nested dicts, its interpolations (a
    LazyConfig's ``${..num_classes}``) resolved."""
    with open(path) as f:
        config = yaml.load(f, Loader=_ConfigLoader)
    return OmegaConf.to_container(OmegaConf.create(config), resolve=True)


def flat_config(config):
    """A nested config (dicts) as ``{"a.b.c": value}``; lists stay values."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update({f"{key}.{k}": v for k, v in flat_config(value).items()})
        else:
            flat[str(key)] = value
    return flat


class TrackingError(RuntimeError):
    """A tracker that cannot start its run (one line: which tracker and why)."""


class TrackingWriter(EventWriter):
    """An experiment tracker as an ``EventWriter``. Subclasses implement ``_start``,
    ``_log_metrics``, ``_log_file`` and ``_finish``; :meth:`start` runs before training."""

    name = ""  # the tracker's name in train.loggers

    def __init__(self, output_dir, log_checkpoints=False, window_size=20):
        """
        Args:
            output_dir (str): the run's output dir (config, run ids, checkpoints, results).
            log_checkpoints (bool): upload each new checkpoint (``last_checkpoint``).
            window_size (int): the median window of smoothed scalars (as ``JSONWriter``'s).
        """
        self.output_dir = output_dir
        self.log_checkpoints = log_checkpoints
        self.window_size = window_size
        self.run_id = None
        self._written = {}  # scalar name -> last iteration sent
        self._checkpoint = None  # the last checkpoint uploaded

    # ---- what a tracker implements ----
    def _start(self, run_id, config):
        """Start a new run (``run_id`` None; ``config``: the saved config as a nested dict, or
        None when there is none) or continue ``run_id``. Returns the run id."""
        raise NotImplementedError

    def _log_metrics(self, metrics, iteration):
        raise NotImplementedError

    def _log_file(self, path, folder):
        """Upload the file ``path`` under ``folder`` (``config``, ``results``, ``checkpoints``)."""
        raise NotImplementedError

    def _finish(self):
        raise NotImplementedError

    # ---- the writer ----
    def start(self, resume):
        """Start the tracked run, or continue this output dir's when ``resume`` (training
        continues from a checkpoint) and it has one; a new run gets the config."""
        ids_file = os.path.join(self.output_dir, RUN_IDS)
        ids = {}
        if os.path.isfile(ids_file):
            with open(ids_file) as f:
                ids = json.load(f)
        run_id = ids.get(self.name) if resume else None
        config_file = os.path.join(self.output_dir, "config.yaml")
        config = None
        if run_id is None and os.path.isfile(config_file):
            config = read_config(config_file)
        try:
            self.run_id = self._start(run_id, config)
        except Exception as e:  # no login, a server that does not answer, a bad project...
            raise TrackingError(
                f"train.loggers: {self.name} could not start its tracked run: {first_line(e)} "
                f"(train.logger_options.{self.name} sets where it goes)"
            ) from e
        if run_id is None and config is not None:
            self._log_file(config_file, "config")
        logger.info(
            f"{self.name}: {'continuing' if run_id else 'started'} tracked run {self.run_id}"
        )
        ids[self.name] = self.run_id
        with open(ids_file, "w") as f:
            json.dump(ids, f, indent=1)

    def write(self):
        """Send the scalars stored since the last write (once per name and iteration; grouped by
        iteration), and the latest checkpoint if it is new and ``log_checkpoints``."""
        by_iteration = defaultdict(dict)
        storage = get_event_storage()
        for name, (value, it) in storage.latest_with_smoothing_hint(self.window_size).items():
            if it > self._written.get(name, -1):
                by_iteration[it][name] = value
                self._written[name] = it
        for it in sorted(by_iteration):
            self._log_metrics(by_iteration[it], it)
        if self.log_checkpoints:
            tag = os.path.join(self.output_dir, "last_checkpoint")
            if os.path.isfile(tag):
                with open(tag) as f:
                    checkpoint = os.path.join(self.output_dir, f.read().strip())
                if checkpoint != self._checkpoint and os.path.isfile(checkpoint):
                    self._log_file(checkpoint, "checkpoints")
                    self._checkpoint = checkpoint
            # (the checkpoint written at a write's iteration is saved before the write)

    def close(self):
        """Upload the evaluation results files and end the run."""
        if self.run_id is None:  # never started (training failed before it began)
            return
        for path in sorted(glob.glob(os.path.join(self.output_dir, "inference", "results*.json"))):
            self._log_file(path, "results")
        self._finish()


class MLflowWriter(TrackingWriter):
    """Logs to an MLflow tracking server (or store): metrics by iteration, the config as
    parameters (``model.backbone.net.depth`` ...) and ``config/config.yaml``, results and
    checkpoints as artifacts."""

    name = "mlflow"
    _BAD_CHARS = re.compile(r"[^\w\-. /:]")  # what MLflow refuses in a metric or param name
    _BATCH = 100  # most params per log_batch call that MLflow accepts
    _MAX_VALUE = 6000  # longest param value MLflow stores

    def __init__(self, output_dir, tracking_uri="", experiment="fpt", run_name="", **kwargs):
        """
        Args:
            tracking_uri (str): e.g. ``http://127.0.0.1:5000``; "": MLflow's default
                (``MLFLOW_TRACKING_URI``, else its local store).
            experiment (str): the experiment's name (created if missing).
            run_name (str): "": MLflow picks one.
            kwargs: of :class:`TrackingWriter`.
        """
        from mlflow.tracking import MlflowClient

        super().__init__(output_dir, **kwargs)
        self.client = MlflowClient(tracking_uri or None)
        self.experiment = experiment
        self.run_name = run_name

    def _key(self, name):
        return self._BAD_CHARS.sub("_", name)

    def _start(self, run_id, config):
        from mlflow.entities import Param

        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = (
            found.experiment_id if found else self.client.create_experiment(self.experiment)
        )
        run_id = self.client.create_run(experiment_id, run_name=self.run_name or None).info.run_id
        params = [
            Param(self._key(k), str(v)[: self._MAX_VALUE])
            for k, v in flat_config(config or {}).items()
        ]
        for i in range(0, len(params), self._BATCH):
            self.client.log_batch(run_id, params=params[i : i + self._BATCH])
        return run_id

    def _log_metrics(self, metrics, iteration):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(self._key(k), float(v), now, iteration) for k, v in metrics.items()],
        )

    def _log_file(self, path, folder):
        self.client.log_artifact(self.run_id, path, artifact_path=folder)

    def _finish(self):
        self.client.set_terminated(self.run_id)


class WandbWriter(TrackingWriter):
    """Logs to Weights & Biases: metrics against an ``iteration`` axis, the config as the run's
    config and ``config.yaml`` file, results files, checkpoints as ``model`` artifacts. The run's
    files go to ``WANDB_DIR``, else the output dir."""

    name = "wandb"

    def __init__(self, output_dir, project="fpt", entity="", run_name="", mode="", **kwargs):
        """
        Args:
            project, entity (str): where the run goes ("" entity: the user's default).
            run_name (str): "": W&B picks one.
            mode (str): ``online``, ``offline`` or ``disabled``; "": ``WANDB_MODE``, else online.
            kwargs: of :class:`TrackingWriter`.
        """
        import wandb

        super().__init__(output_dir, **kwargs)
        self._wandb = wandb
        self.init_args = dict(
            project=project, entity=entity or None, name=run_name or None, mode=mode or None
        )
        self.run = None

    def _start(self, run_id, config):
        self.run = self._wandb.init(
            **self.init_args,
            dir=os.environ.get("WANDB_DIR") or self.output_dir,
            id=run_id,
            resume="allow" if run_id else None,
            config=config,
        )
        # out-of-order and repeated iterations (the final evaluation) need their own x axis
        self.run.define_metric("*", step_metric="iteration")
        return self.run.id

    def _log_metrics(self, metrics, iteration):
        self.run.log({**metrics, "iteration": iteration})

    def _log_file(self, path, folder):
        if folder == "checkpoints":
            artifact = self._wandb.Artifact(f"model-{self.run.id}", type="model")
            artifact.add_file(path)
            self.run.log_artifact(artifact)
        else:
            self.run.save(path, base_path=self.output_dir, policy="now")

    def _finish(self):
        self.run.finish()


class PeriodicWriter(hooks.PeriodicWriter):
    """detectron2's ``PeriodicWriter`` that also starts the trackers among its writers before
    training (continuing their runs when the trainer resumed from a checkpoint)."""

    def before_train(self):
        for writer in self._writers:
            if isinstance(writer, TrackingWriter):
                writer.start(resume=self.trainer.start_iter > 0)
