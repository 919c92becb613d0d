"""train_net.py end to end on the shapes set: train, evaluate, eval-only, resume after SIGKILL,
2-process DDP (gloo), two "machines" over loopback, a dying rank, bad overrides."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from fpt.engine.launch import find_free_port
from support import shapes_val_subset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/Shapes/mask_rcnn_R_18_FPN_tiny.py"
DIGEST = re.compile(r"Rank (\d+) final weights sha256: (\w+)")


@pytest.fixture(scope="module")
def tiny_val(tmp_path_factory):
    """The first 6 shapes_val images as a COCO json (registered with --register-coco)."""
    return shapes_val_subset(str(tmp_path_factory.mktemp("tiny_val")), 6)


def _args(tiny_val, output_dir, *flags, iters=6):
    """train_net.py command line: ``flags`` (e.g. --resume) and tiny-run overrides."""
    return [
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
        "train.checkpointer.period=3",
        "train.log_period=1",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "model.roi_heads.batch_size_per_image=32",
        "model.roi_heads.box_predictor.test_score_thresh=0.0",
        "train.visualize.num_images=0",
        f"train.output_dir={output_dir}",
    ]


def _run(args, timeout=240, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="error")
    return subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def _popen(args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="error")
    return subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _digests(text):
    return dict(DIGEST.findall(text))


def _ok(proc):
    assert proc.returncode == 0, (proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:]


@pytest.fixture(scope="module")
def baseline(tiny_val, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline")
    proc = _run(_args(tiny_val, out))
    _ok(proc)
    return out, proc.stdout + proc.stderr


@pytest.mark.slow
def test_single_process_train_and_evaluate(baseline):
    out, log = baseline
    files = set(os.listdir(out))
    assert {
        "model_0000002.pth",
        "model_0000005.pth",
        "model_final.pth",
        "last_checkpoint",
        "metrics.json",
        "metrics.png",
        "config.yaml",
        "log.txt",
    } <= files
    assert any(f.startswith("events.out.tfevents") for f in files)
    rows = _rows(out / "metrics.json")
    assert [r["iteration"] for r in rows if "total_loss" in r] == list(range(6))
    assert all(r["lr"] > 0 for r in rows if "lr" in r)
    results = json.loads((out / "inference" / "results_iter0000006.json").read_text())
    for task in ("bbox", "segm"):
        assert {"AP", "AP50", "AP-circle", "AP-square", "AP-triangle"} <= set(results[task])
    assert "Per-category segm AP" in log
    assert "malloc keeps freed memory for reuse" in log  # train.cpu_malloc_cache, on CPU
    assert rows[-1]["bbox/AP"] == pytest.approx(results["bbox"]["AP"])
    assert len(_digests(log)) == 1


@pytest.mark.slow
def test_eval_only_reproduces_training_time_evaluation(baseline, tiny_val, tmp_path):
    out, _ = baseline
    proc = _run(
        _args(tiny_val, tmp_path, "--eval-only")
        + [f"train.init_checkpoint={out / 'model_final.pth'}"]
    )
    _ok(proc)
    trained = json.loads((out / "inference" / "results_iter0000006.json").read_text())
    evaluated = json.loads((tmp_path / "inference" / "results.json").read_text())
    assert evaluated == trained
    # the same detections, not only the same summary numbers
    assert (tmp_path / "inference" / "coco_instances_results.json").read_text() == (
        out / "inference" / "coco_instances_results.json"
    ).read_text()


@pytest.mark.slow
def test_resume_after_sigkill_continues_from_the_saved_iteration(baseline, tiny_val, tmp_path):
    first = _popen(_args(tiny_val, tmp_path))
    deadline = time.time() + 200
    while not (tmp_path / "last_checkpoint").exists() and time.time() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    saved = (tmp_path / "last_checkpoint").read_text()
    iteration = int(re.search(r"model_(\d+)", saved).group(1)) if "final" not in saved else 5
    proc = _run(_args(tiny_val, tmp_path, "--resume"))
    _ok(proc)
    log = proc.stdout + proc.stderr
    assert f"Resuming at iteration {iteration + 1}" in log
    # same weights as the uninterrupted run: optimizer, schedule, data order and RNG resumed
    assert _digests(log) == _digests(baseline[1])


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tiny_val, tmp_path):
    proc = _run(_args(tiny_val, tmp_path, "--num-gpus", "2", "--dist-url", "auto", iters=3))
    _ok(proc)
    # rank 1 logs into log.txt.rank1 only (detectron2's setup_logger)
    logs = [(tmp_path / name).read_text() for name in ("log.txt", "log.txt.rank1")]
    digests = _digests("".join(logs))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]
    rows = _rows(tmp_path / "metrics.json")
    assert [r["iteration"] for r in rows if "total_loss" in r] == [0, 1, 2]  # written once


@pytest.mark.slow
def test_two_machines_over_loopback(tiny_val, tmp_path):
    url = f"tcp://127.0.0.1:{find_free_port()}"
    outs = [tmp_path / "machine0", tmp_path / "machine1"]
    procs = [
        _popen(
            _args(
                tiny_val,
                outs[r],
                "--num-machines",
                "2",
                "--machine-rank",
                str(r),
                "--dist-url",
                url,
                iters=3,
            )
        )
        for r in (0, 1)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    d0 = _digests(logs[0])
    d1 = _digests((outs[1] / "log.txt.rank1").read_text())
    assert set(d0) == {"0"} and set(d1) == {"1"} and d0["0"] == d1["1"]
    assert (outs[0] / "model_final.pth").exists() and (outs[0] / "metrics.json").exists()
    written = os.listdir(outs[1]) if outs[1].exists() else []
    assert not [f for f in written if f.endswith(".pth") or f.startswith(("metrics", "events"))]


@pytest.mark.slow
def test_a_dying_rank_makes_the_other_exit_with_a_clear_error(tiny_val, tmp_path):
    url = f"tcp://127.0.0.1:{find_free_port()}"
    procs = [
        _popen(
            _args(
                tiny_val,
                tmp_path / f"m{r}",
                "--num-machines",
                "2",
                "--machine-rank",
                str(r),
                "--dist-url",
                url,
                "--dist-timeout",
                "20",
                iters=1000,
            )
        )
        for r in (0, 1)
    ]
    deadline = time.time() + 200
    while not (tmp_path / "m0" / "metrics.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    procs[1].communicate()
    try:
        log = procs[0].communicate(timeout=120)[0]
    finally:
        procs[0].kill()
    assert procs[0].returncode == 1
    last = log.strip().splitlines()[-1]
    assert last.startswith("train_net.py: error:") and "rank 0" in last, log[-2000:]


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "train.max_itr=5",
            "unknown config key 'train.max_itr' in override "
            "'train.max_itr=5'; closest valid keys: train.max_iter, train.ema, train.iter_size",
        ),
        (
            "dataloader.train.dataset.names=shapes_trian",
            "dataset 'shapes_trian' is not registered; did you mean: shapes_train, "
            "shapes_lvis_train, shapes_val "
            "(register a COCO json with --register-coco NAME JSON IMAGES)",
        ),
    ],
)
def test_bad_config_is_one_line_before_anything_starts(tmp_path, override, message):
    proc = _run(
        [
            sys.executable,
            "train_net.py",
            "--config-file",
            CONFIG,
            override,
            f"train.output_dir={tmp_path / 'out'}",
        ],
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"train_net.py: error: {message}"]
    assert not (tmp_path / "out").exists()
