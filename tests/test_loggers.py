"""Experiment tracking (``train.loggers``): a tiny training run, then its resumption, logging to a
real MLflow tracking server (``mlflow server``, SQLite store, on 127.0.0.1) and to W&B in offline
mode, both read back and compared with ``metrics.json`` and the results files; bad logger
names and options, and a missing tracker package.

The tracking tests run once in CI (``ci_once``): what they check (the writers, the trackers'
clients and files) is ours and the trackers'; detectron2's part, the ``EventStorage`` and the
training loop that fill ``metrics.json``, is the reference the values are compared against, and
is run by the other tests under both detectron2 versions.
"""

import glob
import json
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.request

import pytest

from fpt.config import ConfigError, RunConfig, load_config
from fpt.engine.launch import find_free_port
from support import shapes_val_subset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/Shapes/mask_rcnn_R_18_FPN_tiny.py"
EXPERIMENT = "shapes-tiny"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a free port of 127.0.0.1 with a SQLite store and its own artifact
    folder; its URI. Stopped (its process group) after the module's tests."""
    for extra in ("mlflow", "wandb"):  # requirements/extras.txt (tools/setup.sh's venv)
        pytest.importorskip(extra, reason=f"{extra} is not installed (pip install 'fpt[{extra}]')")
    folder = tmp_path_factory.mktemp("mlflow")
    port = find_free_port()
    log = open(folder / "server.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (folder / "server.log").read_text()[-3000:]
            assert time.time() < deadline, "mlflow server did not start in 180 s"
            time.sleep(0.3)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # (SIGTERM: uvicorn's graceful exit takes >5 s)
        server.wait()
        log.close()


def _train(output_dir, tiny_val, tracking_uri, iters, *flags):
    args = [
        sys.executable,
        "train_net.py",
        "--config-file",
        CONFIG,
        *flags,
        "--register-coco",
        "tiny_val",
        *tiny_val,
        "dataloader.test.dataset.names=tiny_val",
        f"train.max_iter={iters}",
        "train.eval_period=2",
        "train.checkpointer.period=100",
        "train.log_period=1",
        "train.plot=False",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "model.roi_heads.batch_size_per_image=32",
        "train.visualize.num_images=0",
        f"train.output_dir={output_dir}",
        "train.loggers=[json,mlflow,wandb]",
        f"train.logger_options.mlflow.tracking_uri={tracking_uri}",
        f"train.logger_options.mlflow.experiment={EXPERIMENT}",
        "train.logger_options.mlflow.log_checkpoints=True",
        "train.logger_options.wandb.mode=offline",
        "train.logger_options.wandb.log_checkpoints=True",
    ]
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="error",
        WANDB_DIR=str(output_dir / "wandb_dir"),  # and W&B's cache, staging and settings:
        WANDB_CACHE_DIR=str(output_dir / "wandb_cache"),
        WANDB_DATA_DIR=str(output_dir / "wandb_data"),
        WANDB_CONFIG_DIR=str(output_dir / "wandb_config"),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def tracked(mlflow_server, tmp_path_factory):
    """Output dir of a run trained 2 iterations, then resumed to 5, logging to the MLflow server
    and to W&B offline: evaluations at the end of each part (stored as iterations 2 and 5) and
    a periodic one in the second (after 4 iterations, stored as iteration 3: detectron2's
    labels), a checkpoint (``model_final.pth``) at the end of each part."""
    tiny_val = shapes_val_subset(str(tmp_path_factory.mktemp("tiny_val")), 2)
    out = tmp_path_factory.mktemp("tracked")
    first = _train(out, tiny_val, mlflow_server, 2)
    with open(out / "tracking.json") as f:
        first_ids = json.load(f)
    second = _train(out, tiny_val, mlflow_server, 5, "--resume")
    assert "continuing tracked run" in second and "started tracked run" in first
    return out, first_ids


def _exactly(values):
    """``values`` (a dict of numbers) for an equality test in which NaN equals NaN."""
    return pytest.approx(values, rel=0, abs=0, nan_ok=True)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _final_results(out):
    """The last evaluation's results, flattened as the EvalHook stores them."""
    with open(out / "inference" / "results_iter0000005.json") as f:
        results = json.load(f)
    return {f"{task}/{k}": v for task, metrics in results.items() for k, v in metrics.items()}


@pytest.mark.ci_once
def test_mlflow_run_holds_the_metrics_config_results_and_checkpoints(tracked, mlflow_server):
    from mlflow.tracking import MlflowClient

    out, first_ids = tracked
    with open(out / "tracking.json") as f:
        run_id = json.load(f)["mlflow"]
    assert run_id == first_ids["mlflow"]  # the resumed training continued the same run
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"

    # every value of metrics.json (both parts), at its iteration
    rows = _rows(out / "metrics.json")
    assert [r["iteration"] for r in rows if "total_loss" in r] == [0, 1, 2, 3, 4]
    expected = {}
    for row in rows:
        for key, value in row.items():
            if key != "iteration":
                expected.setdefault(key, {})[row["iteration"]] = value
    assert {"total_loss", "lr", "loss_cls", "bbox/AP"} <= set(expected)
    assert sorted(expected["bbox/AP"]) == [2, 3, 5]
    for key, values in expected.items():
        history = {m.step: m.value for m in client.get_metric_history(run_id, key)}
        assert history == _exactly(values), key  # (NaN: the AP of a class absent from the set)
    # metrics.json's last evaluation is the results file's
    final = _final_results(out)
    assert {k: expected[k][5] for k in final} == _exactly(final)

    # the config of the first part, as parameters and file
    params = run.data.params
    assert params["train.max_iter"] == "2" and params["train.eval_period"] == "2"
    assert params["model.roi_heads.batch_size_per_image"] == "32"
    assert params["model.backbone.out_channels"] == "64"
    assert params["model.pixel_std"] == "[57.375, 57.12, 58.395]"
    assert params["model.roi_heads.box_predictor.num_classes"] == "3"  # ${..num_classes}
    artifacts = {
        a.path: a.file_size
        for folder in ("config", "results", "checkpoints")
        for a in client.list_artifacts(run_id, folder)
    }
    assert {
        "config/config.yaml",
        "results/results_iter0000002.json",
        "results/results_iter0000004.json",
        "results/results_iter0000005.json",
        "checkpoints/model_final.pth",
    } <= set(artifacts)
    assert artifacts["checkpoints/model_final.pth"] == os.path.getsize(out / "model_final.pth")
    # the config file as the first part saved it (the resumed part saved max_iter: 5)
    copy = client.download_artifacts(run_id, "config/config.yaml", str(out / "download"))
    with open(copy) as f:
        assert "max_iter: 2" in f.read()


def _wandb_records(path):
    """The records of a W&B run file (``run-<id>.wandb``): a 7-byte header (``:W&B``, magic,
    version), then LevelDB-log blocks of 32 KiB holding chunks (4-byte checksum, 2-byte length,
    1-byte type: full, first, middle, last) of serialized ``wandb_internal_pb2.Record``-s."""
    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B", path
    pos, chunks = 7, []
    while len(data) - pos >= 7:
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header: padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # full, last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def _key(item):
    """A W&B record item's key (given as ``key``, or as its parts in ``nested_key``)."""
    return item.key or "/".join(item.nested_key)


@pytest.mark.ci_once
def test_wandb_offline_run_holds_the_metrics_config_results_and_checkpoints(tracked):
    out, first_ids = tracked
    with open(out / "tracking.json") as f:
        run_id = json.load(f)["wandb"]
    assert run_id == first_ids["wandb"]
    files = sorted(glob.glob(str(out / "wandb_dir" / "wandb" / "offline-run-*" / "run-*.wandb")))
    assert [os.path.basename(f) for f in files] == [f"run-{run_id}.wandb"] * 2  # both parts

    history, config, saved, checkpoints = {}, {}, set(), []
    for path in files:
        for record in _wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                row = {_key(i): json.loads(i.value_json) for i in record.history.item}
                history.setdefault(row.pop("iteration"), {}).update(row)
            elif kind == "run" and not config:
                config = {_key(i): json.loads(i.value_json) for i in record.run.config.update}
            elif kind == "files":
                saved.update(f.path for f in record.files.files)
            elif kind == "artifact":
                entries = record.artifact.manifest.contents
                checkpoints.append((record.artifact.type, [(e.path, e.size) for e in entries]))
    for row in _rows(out / "metrics.json"):
        it = row.pop("iteration")
        assert {k: history[it][k] for k in row} == _exactly(row), it
    final = _final_results(out)
    assert {k: history[5][k] for k in final} == _exactly(final)
    assert config["train"]["max_iter"] == 2
    assert config["model"]["roi_heads"]["batch_size_per_image"] == 32
    assert {"config.yaml", "inference/results_iter0000005.json"} <= saved
    size = os.path.getsize(out / "model_final.pth")
    assert checkpoints == [("model", [("model_final.pth", size)])] * 2  # one each part


def test_unknown_logger_or_option_is_one_line():
    with pytest.raises(ConfigError) as e:
        RunConfig(load_config(CONFIG, ["train.loggers=[json,neptune]"])).train_settings()
    assert str(e.value) == (
        "train.loggers: unknown logger 'neptune'; "
        "expected some of ['tensorboard', 'json', 'wandb', 'mlflow']"
    )
    cfg = load_config(CONFIG)
    cfg.train.logger_options.mlflow.uri = "http://x"  # as a config file may set it
    with pytest.raises(ConfigError) as e:
        RunConfig(cfg).train_settings()
    assert str(e.value) == (
        "train.logger_options.mlflow: unknown option(s) ['uri']; "
        "expected some of ['tracking_uri', 'experiment', 'run_name', 'log_checkpoints']"
    )


def test_missing_tracker_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: import fails
    with pytest.raises(ConfigError) as e:
        RunConfig(load_config(CONFIG, ["train.loggers=[tensorboard,mlflow]"])).train_settings()
    assert str(e.value) == (
        "train.loggers names 'mlflow', but the mlflow package is not installed: "
        "pip install 'fpt[mlflow]'"
    )


def test_default_is_tensorboard_and_json_and_yacs_takes_the_same_option():
    from detectron2.model_zoo import get_config_file

    assert RunConfig(load_config(CONFIG)).train_settings().loggers == {
        "tensorboard": {},
        "json": {},
    }
    yacs = get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml")
    opts = ["LOGGERS", "['json','mlflow']", "LOGGER_OPTIONS.MLFLOW.TRACKING_URI", "http://h:5000"]
    assert RunConfig(load_config(yacs, opts)).train_settings().loggers == {
        "json": {},
        "mlflow": dict(
            tracking_uri="http://h:5000", experiment="fpt", run_name="", log_checkpoints=False
        ),
    }
    with pytest.raises(ConfigError) as e:
        RunConfig(load_config(yacs, ["LOGGERS", "['neptune']"])).train_settings()
    assert str(e.value).startswith("LOGGERS: unknown logger 'neptune'; expected some of")


def test_a_tracker_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    """W&B online without a login (no API key, no network needed to find out): one line naming
    the tracker and W&B's reason, no traceback from inside wandb."""
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'fpt[wandb]')")
    from fpt.engine.tracking import TrackingError, WandbWriter

    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    writer = WandbWriter(str(tmp_path), project="fpt-test", mode="online")
    with pytest.raises(TrackingError) as e:
        writer.start(resume=False)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("train.loggers: wandb could not start its tracked run: ")
    assert "wandb login" in message and message.endswith(
        "(train.logger_options.wandb sets where it goes)"
    )
    writer.close()  # nothing started: nothing to end
