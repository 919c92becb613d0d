"""SLURM: ranks and rendezvous from srun's variables, the checkpoint on SLURM's signals, and
tools/submit.py against a real one-node SLURM (tools/slurm_localhost.sh) with a requeue mid-run.

The real-SLURM test needs root and Debian's slurm-wlm + munge (``tools/slurm_localhost.sh
install``, which .ci/run calls); without them it is skipped with the reason.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from detectron2.utils.env import seed_all_rng

import engine_toy as toy
from fpt.engine import Trainer
from fpt.engine.launch import (
    DistributedError,
    expand_hostlist,
    launch,
    launcher_environment,
    slurm_port,
)
from fpt.engine.preemption import Interrupted, SignalCheckpointer, watcher
from fpt.engine.slurm import TrainJob, parse_minutes
from fpt.engine.trainer import weights_digest
from support import load_module, shapes_val_subset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/Shapes/mask_rcnn_R_18_FPN_tiny.py"


# ---- host lists, launcher variables, time limits ---------------------------------------------
@pytest.mark.parametrize(
    "hostlist, hosts",
    [
        ("localhost", ["localhost"]),
        ("node[01-03]", ["node01", "node02", "node03"]),
        ("node[01-02,07],gpu5", ["node01", "node02", "node07", "gpu5"]),
        ("a[8-10]", ["a8", "a9", "a10"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("x-1,y[003]", ["x-1", "y003"]),
    ],
)
def test_hostlist_expansion(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


def test_a_bad_hostlist_is_an_error():
    with pytest.raises(ValueError, match="node\\[a-b\\]"):
        expand_hostlist("node[a-b]")


def _srun_env(rank, tasks=4, nodes=2, **extra):
    return {
        "SLURM_JOB_ID": "123456",
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": str(rank),
        "SLURM_STEP_NUM_TASKS": str(tasks),
        "SLURM_LOCALID": str(rank % (tasks // nodes)),
        "SLURM_STEP_NUM_NODES": str(nodes),
        "SLURM_NODEID": str(rank // (tasks // nodes)),
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_STEP_NODELIST": "gpu[07-08]",
        **extra,
    }


def test_srun_tasks_take_ranks_and_rendezvous_from_slurm():
    started = launcher_environment("tcp://127.0.0.1:50000", _srun_env(3))
    assert started.launcher == "srun"
    assert (started.rank, started.world_size, started.local_rank) == (3, 4, 1)
    assert (started.local_size, started.machine_rank) == (2, 1)
    port = 15000 + 123456 % 15000
    assert started.dist_url == f"tcp://gpu07:{port}" and slurm_port("123456") == port
    given = launcher_environment(None, _srun_env(0, MASTER_ADDR="10.0.0.1", MASTER_PORT="2345"))
    assert given.dist_url == "tcp://10.0.0.1:2345"


def test_torchrun_variables_read_by_the_same_piece():
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    started = launcher_environment("env://", env)
    assert started == ("torchrun", 5, 8, 1, 4, 1, "env://")
    assert launcher_environment("tcp://127.0.0.1:1", env) is None  # torchrun needs env://


def test_outside_an_srun_step_nothing_is_read():
    batch_script = _srun_env(0, tasks=1, nodes=1)
    del batch_script["SLURM_STEP_ID"]  # an sbatch script or salloc shell is no step
    assert launcher_environment("tcp://127.0.0.1:1", batch_script) is None
    one_task = _srun_env(0, tasks=1, nodes=1)  # srun -n1: spawns --num-gpus processes itself
    assert launcher_environment("tcp://127.0.0.1:1", one_task) is None
    assert launcher_environment("env://", one_task).world_size == 1


def test_tasks_placed_cyclically_are_one_line():
    env = _srun_env(1, SLURM_NODEID="1", SLURM_LOCALID="0")  # rank 1 on the second node
    with pytest.raises(DistributedError, match="--ntasks-per-node=N --distribution=block"):
        launcher_environment(None, env)


def test_num_gpus_inside_several_srun_tasks_is_one_line(monkeypatch):
    for name, value in _srun_env(0).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DistributedError, match="start one task per GPU"):
        launch(lambda: None, 2)


@pytest.mark.parametrize(
    "text, minutes",
    [("90", 90), ("1:30", 2), ("2:00:00", 120), ("1-0", 1440), ("1-2:30", 1590), ("0:0:1", 1)],
)
def test_time_limits(text, minutes):
    assert parse_minutes(text) == minutes


# ---- the checkpoint on a stop signal, in process (what the SLURM test runs for real) ----------
@pytest.fixture
def stop_signals():
    """The process's watcher handling SIGTERM/SIGUSR2, as in a SLURM job; put back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2)}
    watcher.install()
    yield watcher
    for s, handler in saved.items():
        signal.signal(s, handler)
    watcher.previous.clear()
    watcher.received = None


def _train(output_dir, resume=False, signal_at=None):
    seed_all_rng(0)  # as train_net.py: each run from the same initial weights and RNG states
    os.makedirs(output_dir, exist_ok=True)  # as train_net.py (detectron2 main's writers need it)
    trainer = Trainer(toy.toy_config(output_dir, max_iter=8, period=3))
    if signal_at is not None:  # SIGTERM to this process during iteration signal_at
        hook = next(h for h in trainer._hooks if isinstance(h, SignalCheckpointer))
        after_step = hook.after_step

        def signalled_after_step():
            if trainer.iter == signal_at:
                os.kill(os.getpid(), signal.SIGTERM)
            after_step()

        hook.after_step = signalled_after_step
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return weights_digest(trainer.model)


def test_sigterm_writes_a_checkpoint_at_once_and_resume_is_exact(stop_signals, tmp_path):
    full = _train(tmp_path / "full")
    with pytest.raises(Interrupted) as stopped:
        _train(tmp_path / "stopped", signal_at=4)
    e = stopped.value
    assert (e.signum, e.iteration, e.exit_code) == (signal.SIGTERM, 4, 143)
    assert e.checkpoint == str(tmp_path / "stopped" / "model_0000004.pth")
    assert (tmp_path / "stopped" / "last_checkpoint").read_text() == "model_0000004.pth"
    assert not (tmp_path / "stopped" / "model_final.pth").exists()
    stop_signals.received = None
    assert _train(tmp_path / "stopped", resume=True) == full


# ---- tools/submit.py: one-line errors before anything is submitted ----------------------------
submit_tool = load_module("fpt_tools_submit", os.path.join(REPO, "tools", "submit.py"))


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--num-gpus", "2"],
            "--num-gpus is set by SLURM's layout: use --nodes and --gpus-per-node",
        ),
        (["--time", "1:2:3:4"], "--time: not a SLURM time limit: '1:2:3:4'"),
        (["--gpus-per-node", "-1"], "need N >= 1, G >= 0"),
        (["train.max_itr=3"], "unknown config key 'train.max_itr'"),
    ],
)
def test_submit_errors_are_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as e:
        submit_tool.main(["--config-file", CONFIG, "--gpus-per-node", "0", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code != 0 and len(err) == 1 and err[0].startswith("submit.py: error: "), err
    assert message in err[0]


def test_submit_without_submitit_or_sbatch_is_one_line(capsys, monkeypatch, tmp_path):
    args = ["--config-file", CONFIG, "--gpus-per-node", "0", f"train.output_dir={tmp_path}"]
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "submitit", None)  # import submitit fails
        with pytest.raises(SystemExit):
            submit_tool.main(args)
    assert capsys.readouterr().err == (
        "submit.py: error: submitit is not installed: pip install 'fpt[slurm]' (or submitit)\n"
    )
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    with pytest.raises(SystemExit):
        submit_tool.main(args)
    assert capsys.readouterr().err == (
        "submit.py: error: sbatch/srun not found: submit from a machine of the SLURM cluster\n"
    )


def test_the_job_resumes_once_requeued_and_checkpoint_adds_resume():
    pytest.importorskip("submitit")
    job = TrainJob(["--config-file", CONFIG, "train.max_iter=3"], REPO)
    resumed = job.checkpoint().function
    assert isinstance(resumed, TrainJob)
    assert resumed.argv == ["--resume", "--config-file", CONFIG, "train.max_iter=3"]
    assert resumed.checkpoint().function.argv == resumed.argv


# ---- a real one-node SLURM: submit, requeue mid-run, same weights as without -----------------
def _tiny_run(tiny_val, output_dir):
    """train_net.py's flags and overrides of a 8-iteration CPU run, checkpoints every 3."""
    return [
        "--config-file",
        CONFIG,
        "--register-coco",
        "tiny_val",
        *tiny_val,
        "dataloader.test.dataset.names=tiny_val",
        "train.max_iter=8",
        "train.checkpointer.period=3",
        "train.log_period=1",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "model.roi_heads.batch_size_per_image=32",
        "train.visualize.num_images=0",
        f"train.output_dir={output_dir}",
    ]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node SLURM started by tools/slurm_localhost.sh: the environment its clients need."""
    pytest.importorskip("submitit")
    missing = [t for t in ("slurmctld", "slurmd", "munged", "sbatch") if not shutil.which(t)]
    if missing:
        pytest.skip(
            f"SLURM is not installed ({', '.join(missing)} missing): run "
            "tools/slurm_localhost.sh install as root (.ci/run does)"
        )
    if os.geteuid() != 0:
        pytest.skip("starting a local SLURM needs root")
    state = tmp_path_factory.mktemp("slurm")
    script = os.path.join(REPO, "tools", "slurm_localhost.sh")
    proc = subprocess.run([script, "start", str(state)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    conf = proc.stdout.strip().splitlines()[-1].partition("=")[2]
    yield dict(os.environ, SLURM_CONF=conf, OMP_NUM_THREADS="1", PYTHONWARNINGS="error")
    subprocess.run([script, "stop", str(state)], capture_output=True)


def _job_state(env, job_id):
    out = subprocess.run(
        ["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True
    ).stdout
    state = re.search(r"JobState=(\w+)", out)
    restarts = re.search(r"Restarts=(\d+)", out)
    return (state.group(1) if state else "?"), int(restarts.group(1)) if restarts else -1


def _job_logs(out):
    return "".join(p.read_text() for p in sorted((out / "slurm").glob("*_log.*")))[-5000:]


def _wait(predicate, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {seconds} s waiting for {what}")


@pytest.mark.ci_once
@pytest.mark.slow
def test_requeued_job_ends_with_the_weights_of_an_uninterrupted_run(slurm, tmp_path):
    tiny_val = shapes_val_subset(str(tmp_path), 2)
    # the uninterrupted run, alongside (same environment: one thread, same CPU)
    reference_log = open(tmp_path / "reference.log", "w")
    reference = subprocess.Popen(
        [sys.executable, "train_net.py", *_tiny_run(tiny_val, tmp_path / "reference")],
        cwd=REPO,
        env=slurm,
        stdout=reference_log,
        stderr=subprocess.STDOUT,
    )
    try:
        _submit_and_requeue(slurm, tiny_val, tmp_path / "slurm_run")
        assert reference.wait(timeout=240) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    finally:
        reference.kill()
        reference.wait()
        reference_log.close()
    # the same bits: one thread each, num_workers=0, every RNG and the sampler resumed
    final = torch.load(tmp_path / "slurm_run" / "model_final.pth", weights_only=True)["model"]
    expected = torch.load(tmp_path / "reference" / "model_final.pth", weights_only=True)["model"]
    assert final.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(final[name], value), name


def _submit_and_requeue(slurm, tiny_val, out):
    """Submit the tiny run with tools/submit.py, requeue it once it has a checkpoint, wait for
    its end; check that it stopped mid-run on SIGTERM and resumed after its checkpoint."""
    submitted = subprocess.run(
        [
            sys.executable,
            "tools/submit.py",
            "--gpus-per-node",
            "0",
            "--time",
            "10",
            *_tiny_run(tiny_val, out),
        ],
        cwd=REPO,
        env=slurm,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = re.search(r"Submitted job (\d+)", submitted.stdout).group(1)

    # mid-run: once the checkpoint of iteration 2 is there, as a preemption would
    _wait(
        lambda: (out / "model_0000002.pth").exists()
        or _job_state(slurm, job_id)[0] in ("FAILED", "COMPLETED"),
        120,
        "the first checkpoint",
    )
    subprocess.run(["scontrol", "requeue", job_id], env=slurm, check=True)
    _wait(
        lambda: _job_state(slurm, job_id)[0] in ("COMPLETED", "FAILED", "CANCELLED"),
        150,
        f"job {job_id} to end after the requeue",
    )
    assert _job_state(slurm, job_id) == ("COMPLETED", 1), _job_logs(out)

    log = (out / "log.txt").read_text()
    saved = re.search(r"SIGTERM received: saving model_(\d+) and stopping", log)
    assert saved, _job_logs(out)
    stopped_at = int(saved.group(1))
    assert 2 <= stopped_at < 7  # mid-run: not the last iteration
    assert f"Resuming at iteration {stopped_at + 1}" in log
