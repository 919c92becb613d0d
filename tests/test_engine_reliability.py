"""fpt.engine on the paths a CPU test run rarely takes (review of issue 11, items 6a-6f, 6n, 6o):
backend and device from the config, worker failures, process-group timeouts, EMA, SyncBN,
per-rank resume state, the yacs CPU fallback and cudnn.benchmark. Multi-process checks run 2
gloo processes on the toy config of ``engine_toy`` (process start-up and imports dominate)."""

import importlib
import json
import os
import shutil
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from detectron2.utils import comm

import engine_toy as toy
from fpt.config import load_config
from fpt.engine import DistributedError, Trainer, launch, run
from fpt.engine.launch import WorkerError, distributed_backend, find_free_port
from fpt.engine.rng import get_rng_state, set_rng_state
from fpt.config import RunConfig
from fpt.engine.trainer import weights_digest
from fpt.utils.device import training_device

launch_module = importlib.import_module("fpt.engine.launch")  # fpt.engine.launch: the function

SHAPES = "configs/Shapes/mask_rcnn_R_18_FPN_tiny.py"
VITDET = "configs/COCO/ViTDet/mask_rcnn_vitdet_b_100ep.py"
TIMEOUT = timedelta(seconds=45)


def _fake_cuda(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


# ---- 6a: backend and device from the config and the hardware ----------------------------------
@pytest.mark.parametrize(
    "device, processes, gpus, backend",
    [
        ("cpu", 2, 8, "gloo"),  # a CPU config on a GPU machine: not NCCL
        ("cuda", 2, 8, "nccl"),
        ("cuda", 8, 8, "nccl"),
        ("cuda", 4, 0, "gloo"),  # CUDA config without CUDA: trains on CPU
        (None, 2, 8, "nccl"),
        (None, 2, 0, "gloo"),
    ],
)
def test_backend_follows_the_config_device_and_the_hardware(
    monkeypatch, device, processes, gpus, backend
):
    _fake_cuda(monkeypatch, gpus)
    assert distributed_backend(device, processes) == backend


def test_more_processes_than_gpus_is_an_error_not_a_shared_gpu(monkeypatch):
    _fake_cuda(monkeypatch, 2)
    with pytest.raises(DistributedError, match=r"--num-gpus 4 .* has 2 CUDA devices"):
        distributed_backend("cuda:0", 4)


def test_num_gpus_beyond_the_gpus_present_is_one_line(monkeypatch, capsys, tmp_path):
    _fake_cuda(monkeypatch, 2)
    argv = ["--config-file", SHAPES, "--num-gpus", "4", "train.device=cuda"]
    with pytest.raises(SystemExit) as exit_info:
        run(argv + [f"train.output_dir={tmp_path / 'out'}"])
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--num-gpus 4 asks for 4 processes" in lines[0], lines
    assert "has 2 CUDA devices" in lines[0] and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "configured, gpus, world, expected",
    [
        ("cuda", 2, 2, "cuda:1"),  # this rank's GPU
        ("cuda:0", 2, 2, "cuda:1"),  # never every rank on one GPU
        ("cuda:1", 2, 1, "cuda:1"),  # one process: as configured
        ("cpu", 2, 2, "cpu"),
        ("cuda", 0, 2, "cpu"),  # no CUDA: CPU fallback
    ],
)
def test_each_rank_trains_on_its_own_device(monkeypatch, configured, gpus, world, expected):
    _fake_cuda(monkeypatch, gpus)
    monkeypatch.setattr(comm, "get_world_size", lambda: world)
    monkeypatch.setattr(comm, "get_local_rank", lambda: 1)
    assert training_device(configured) == torch.device(expected)


# ---- 6b: a worker's exception (the 2-process test is below) -------------------------------------
def test_only_errors_from_torch_distributed_are_labelled_as_a_lost_peer():
    try:
        dist.all_reduce(torch.zeros(1))  # no process group: raised inside torch.distributed
    except Exception as e:  # noqa: BLE001  (whatever torch raises there)
        assert launch_module._lost_peer(e)
    gloo = "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer"
    assert launch_module._lost_peer(RuntimeError(gloo))  # raised in C++, e.g. in DDP's backward
    for error in (OSError("connection timed out"), RuntimeError("[model] connection refused")):
        try:
            raise error
        except Exception as e:  # noqa: BLE001
            assert not launch_module._lost_peer(e)


# ---- 6c: --dist-timeout on every process group -------------------------------------------------
def test_side_groups_get_the_timeout(monkeypatch):
    """detectron2's gloo side group (comm.all_gather on NCCL runs) and the per-machine group."""
    timeout = timedelta(seconds=7)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{find_free_port()}",
        rank=0,
        world_size=1,
        timeout=timeout,
    )
    new_group = dist.new_group
    try:
        monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")  # as on GPUs
        launch_module.setup_process_groups(1, 0, timeout)
        gloo_group = comm._get_global_gloo_group()
        assert gloo_group is not dist.group.WORLD  # a new group, as on an NCCL run
        assert toy.group_timeout(gloo_group) == 7
        assert toy.group_timeout(comm._LOCAL_PROCESS_GROUP) == 7
        assert dist.new_group is new_group  # torch's own function again afterwards
    finally:
        monkeypatch.undo()
        comm._get_global_gloo_group.cache_clear()
        comm._LOCAL_PROCESS_GROUP = None
        dist.destroy_process_group()


# ---- 6d: EMA from the loaded weights; checkpoints hold the evaluated weights ---------------------
EMA = {"ema.enabled": True, "ema.decay": 0.5}


def _evaluate(state):
    """The toy evaluator's score of a state dict."""
    model = toy.ToyModel()
    model.load_state_dict(state)
    model.eval()
    evaluator = toy.ToyEvaluator()
    with torch.no_grad():
        for batch in toy.toy_test_loader(toy.toy_dataset(4)):
            evaluator.process(batch, model(batch))
    return evaluator.evaluate()["toy"]["score"]


def test_ema_starts_from_the_init_checkpoint(tmp_path):
    init = toy.ToyModel()
    with torch.no_grad():
        for p in init.parameters():
            p.fill_(0.5)
    torch.save({"model": init.state_dict()}, tmp_path / "init.pth")
    cfg = toy.toy_config(tmp_path / "out", init_checkpoint=str(tmp_path / "init.pth"), **EMA)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    for hook in trainer._hooks:  # not trained: close the metric writers it opened
        for writer in getattr(hook, "_writers", []):
            writer.close()
    for name, value in init.state_dict().items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(trainer.ema.ema[name], value, msg=name)


def test_best_and_final_checkpoints_hold_the_weights_that_were_evaluated(tmp_path):
    cfg = toy.toy_config(tmp_path, eval_period=2, **EMA, **{"best_checkpoint.metric": "toy/score"})
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    final_results = trainer.train()
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    # "model": the EMA weights, evaluated; "raw_model": the training weights
    assert _evaluate(final["model"]) == pytest.approx(final_results["toy"]["score"], abs=1e-6)
    raw = toy.unwrap(trainer.model).state_dict()
    for name, value in final["raw_model"].items():
        torch.testing.assert_close(value, raw[name], msg=name)
    assert _evaluate(final["raw_model"]) != pytest.approx(_evaluate(final["model"]), abs=1e-6)
    rows = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    scores = [r["toy/score"] for r in rows if "toy/score" in r]
    assert len(scores) == 3  # iterations 2, 4, 6
    best = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert _evaluate(best["model"]) == pytest.approx(max(scores), abs=1e-6)


def _resume_copy(source, target, iteration):
    """A run folder holding ``source``'s checkpoint of ``iteration`` as its last one."""
    os.makedirs(target)
    name = f"model_{iteration:07d}.pth"
    shutil.copy(os.path.join(source, name), os.path.join(target, name))
    with open(os.path.join(target, "last_checkpoint"), "w") as f:
        f.write(name)


def test_resume_with_ema_continues_exactly(tmp_path):
    runs = {}
    for name, resume in (("full", False), ("resumed", True)):
        if resume:
            _resume_copy(tmp_path / "full", tmp_path / name, 2)
        trainer = Trainer(toy.toy_config(tmp_path / name, seed=-1, **EMA))
        trainer.resume_or_load(resume=resume)
        trainer.train()
        runs[name] = torch.load(tmp_path / name / "model_final.pth", weights_only=True)
        runs[name]["digest"] = weights_digest(trainer.model)
    assert runs["resumed"]["digest"] == runs["full"]["digest"]
    for key in ("model", "raw_model"):
        for name, value in runs["full"][key].items():
            torch.testing.assert_close(runs["resumed"][key][name], value, msg=f"{key}.{name}")


# ---- 6e, 6f, 6c, 6b: 2 gloo processes; SyncBN, per-rank resume state, group timeouts, failure ----
# the message says "connection" and "timed out": once relabelled "lost contact with another
# rank", without its type or traceback
FAILURE = "connection to the dataset server timed out"


def _launch_toy(output_dir, resume, fail_message=None, **options):
    """Train the toy config in 2 gloo processes; (each rank's report, the WorkerError or None)."""
    error = None
    try:
        launch(
            toy.train_worker,
            2,
            dist_url="auto",
            args=(str(output_dir), resume, options, fail_message),
            timeout=TIMEOUT,
            device="cpu",
        )
    except WorkerError as e:
        error = e
    reports = []
    for rank in (0, 1):
        with open(os.path.join(output_dir, f"report_rank{rank}.json")) as f:
            reports.append(json.load(f))
    return reports, error


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """An uninterrupted 2-process run (6 iterations, checkpoints at 2 and 5, random seed, SyncBN)
    and the same run resumed from its checkpoint of iteration 2, whose rank 1 then raises
    ``OSError(FAILURE)``. About 20 s on 2 idle cores (process start-up and imports)."""
    root = tmp_path_factory.mktemp("ddp")
    options = dict(seed=-1, sync_bn=True)
    full, _ = _launch_toy(root / "full", False, **options)
    _resume_copy(root / "full", root / "resumed", 2)
    resumed, error = _launch_toy(root / "resumed", True, FAILURE, **options)
    return root, full, resumed, error


@pytest.mark.slow
def test_resumed_two_process_run_is_identical_to_the_uninterrupted_one(two_process_runs):
    root, full, resumed, _ = two_process_runs
    for rank in (0, 1):
        # every rank draws the same data, augmentations and dropout masks after resuming
        assert resumed[rank]["losses"] == [x for x in full[rank]["losses"] if x[0] >= 3], rank
        assert resumed[rank]["digest"] == full[rank]["digest"]
    assert full[0]["losses"] != full[1]["losses"]  # ranks do draw differently


@pytest.mark.slow
def test_checkpoints_hold_every_ranks_rng_and_the_random_sampler_seed(two_process_runs):
    root = two_process_runs[0]
    checkpoint = torch.load(root / "full" / "model_0000002.pth", weights_only=True)
    ranks = checkpoint["trainer"]["ranks"]
    assert len(ranks) == 2
    assert not torch.equal(ranks[0]["rng"]["torch"], ranks[1]["rng"]["torch"])
    seeds = {r["sampler"]["seed"] for r in ranks}
    assert len(seeds) == 1 and isinstance(seeds.pop(), int)  # train.seed=-1: a random one


@pytest.mark.slow
def test_sync_batchnorm_is_converted_before_the_optimizer_is_built(two_process_runs):
    for report in two_process_runs[1]:
        assert report["norm"] == "NaiveSyncBatchNorm"
        assert report["optimizer_holds_the_parameters"]


@pytest.mark.slow
def test_every_process_group_has_the_dist_timeout(two_process_runs):
    for report in two_process_runs[1]:
        assert report["timeouts"] == {"world": 45, "local": 45, "gloo": 45}


@pytest.mark.slow
def test_a_failing_worker_reports_rank_type_message_and_traceback(two_process_runs):
    root, error = two_process_runs[0], two_process_runs[3]
    log_file = root / "resumed" / "log.txt.rank1"
    assert str(error) == f"rank 1 failed: OSError: {FAILURE} (traceback in {log_file})"
    assert (error.rank, error.type_name) == (1, "OSError")
    log = log_file.read_text()
    assert "Rank 1 failed with OSError" in log and "Traceback (most recent call last)" in log
    assert "in _read_remote_dataset" in log and f"OSError: {FAILURE}" in log


def test_cuda_rng_state_is_saved_and_restored(monkeypatch):
    saved = torch.arange(8, dtype=torch.uint8)
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": saved.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device="cuda": restored.append(s))
    state = get_rng_state(cuda=True)
    assert torch.equal(state["cuda"], saved)
    set_rng_state(state)
    assert len(restored) == 1 and torch.equal(restored[0], saved)
    assert "cuda" not in get_rng_state(cuda=False)


# ---- 6n: --eval-only with a yacs config asking for CUDA on a CPU machine -------------------------
def test_yacs_model_falls_back_to_cpu_like_lazy_configs(monkeypatch, tmp_path):
    from test_engine_trainer import _tiny_yacs

    _fake_cuda(monkeypatch, 0)
    cfg = _tiny_yacs(tmp_path)
    cfg.MODEL.DEVICE = "cuda"
    cfg.freeze()
    model = Trainer.build_model(cfg)  # what --eval-only builds
    assert next(model.parameters()).device == torch.device("cpu")
    assert cfg.MODEL.DEVICE == "cuda"  # the caller's config is left as it was


# ---- 6o: cudnn.benchmark is a setting ------------------------------------------------------------
def test_cudnn_benchmark_setting(tmp_path):
    from detectron2.config import get_cfg

    def cudnn_benchmark(cfg):
        return RunConfig(cfg).cudnn_benchmark

    assert cudnn_benchmark(load_config(SHAPES)) is False  # images of any size
    assert cudnn_benchmark(load_config(VITDET)) is True  # LSJ: padded to 1024 x 1024
    assert cudnn_benchmark(load_config(VITDET, ["train.cudnn_benchmark=False"])) is False
    assert cudnn_benchmark(load_config(SHAPES, ["train.cudnn_benchmark=True"])) is True
    yacs = get_cfg()
    assert cudnn_benchmark(yacs) is False  # detectron2's CUDNN_BENCHMARK default
    yacs.CUDNN_BENCHMARK = True
    assert cudnn_benchmark(yacs) is True


def test_default_setup_applies_the_setting(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from fpt.engine import setup

    monkeypatch.setattr(setup, "setup_logger", lambda *a, **k: None)
    monkeypatch.setattr(setup, "_env_info", lambda: "")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    setup.default_setup(load_config(VITDET), SimpleNamespace(eval_only=False), str(tmp_path), 0)
    assert torch.backends.cudnn.benchmark is True
