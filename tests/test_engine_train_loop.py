"""AccumulatingAMPTrainer (accumulation, clipping, AMP, NaN stop; its previous name), EMA, atomic
checkpoints, resumable sampler, CPU-safe SyncBN (fpt.engine)."""

import itertools
import os

import pytest
import torch

from detectron2.data.samplers import TrainingSampler
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.utils.events import EventStorage

from fpt.engine.checkpoint import AtomicCheckpointer, atomic_write
from fpt.engine.ddp import cpu_safe_sync_batchnorm
from fpt.engine.hooks import EMAHook, LRScheduler
from fpt.data.samplers import ResumableTrainingSampler
from fpt.engine.train_loop import AccumulatingAMPTrainer, NonFiniteLossError, clip_gradients


class Regression(torch.nn.Module):
    """loss = mean((x @ w - y)^2) on a batch [(x, y), ...]; returns a loss dict."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch])
        out = self.linear(x)
        return {"loss_mse": ((out - y) ** 2).mean(), "loss_l1": (out - y).abs().mean() * 0}


def _batches(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        [(torch.randn(4, generator=g), torch.randn(1, generator=g)) for _ in range(size)]
        for _ in range(n)
    ]


def _step(model, loader, **kwargs):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = AccumulatingAMPTrainer(model, loader, opt, **kwargs)
    with EventStorage(0):
        trainer.iter = 0
        trainer.run_step()
    return model


def test_previous_name_still_imports_with_a_future_warning():
    import subprocess
    import sys

    import fpt.engine
    import fpt.engine.train_loop
    from detectron2.engine import AMPTrainer as D2AMPTrainer

    for module in (fpt.engine, fpt.engine.train_loop):
        with pytest.warns(FutureWarning, match="renamed AccumulatingAMPTrainer"):
            assert module.AMPTrainer is AccumulatingAMPTrainer
    assert "AMPTrainer" not in fpt.engine.__all__
    assert AccumulatingAMPTrainer is not D2AMPTrainer
    # importing fpt and its engine warns of nothing (the old name only warns when used)
    code = "import fpt, fpt.engine, fpt.predictor, fpt.inference"
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)


def test_gradient_accumulation_equals_one_big_batch():
    small = _batches(2, 3)
    big = [small[0] + small[1]]
    a = _step(Regression(), small, iter_size=2)
    b = _step(Regression(), big, iter_size=1)
    # mean over 2 x 3 samples == mean of the two 3-sample means
    torch.testing.assert_close(a.linear.weight, b.linear.weight)
    assert not torch.equal(a.linear.weight, Regression().linear.weight)  # it did move


def test_gradient_clipping_by_norm():
    params = [torch.nn.Parameter(torch.zeros(3))]
    params[0].grad = torch.tensor([3.0, 4.0, 0.0])
    total = clip_gradients(params, "norm", clip_value=1.0)
    assert total.item() == pytest.approx(5.0)
    torch.testing.assert_close(params[0].grad, torch.tensor([0.6, 0.8, 0.0]))
    clip_gradients(params, "value", clip_value=0.7)
    torch.testing.assert_close(params[0].grad, torch.tensor([0.6, 0.7, 0.0]))
    with pytest.raises(ValueError, match="clip_type"):
        clip_gradients(params, "full")


def test_clipping_inside_the_step_limits_the_update():
    data = [[(torch.ones(4) * 100, torch.zeros(1))]]
    model = _step(Regression(), data, clip_gradients={"clip_type": "norm", "clip_value": 0.01})
    delta = torch.cat(
        [(p - q).flatten() for p, q in zip(model.parameters(), Regression().parameters())]
    )
    assert delta.norm().item() == pytest.approx(0.1 * 0.01, rel=1e-4)  # lr * max norm


def test_bf16_autocast_on_cpu():
    seen = []

    class Probe(Regression):
        def forward(self, batch):
            out = super().forward(batch)
            seen.append(self.linear(torch.zeros(1, 4)).dtype)
            return out

    _step(Probe(), _batches(1, 2), amp=True)
    assert seen == [torch.bfloat16]
    _step(Probe(), _batches(1, 2), amp=False)
    assert seen[-1] == torch.float32


def test_non_finite_loss_stops_with_iteration_and_names():
    data = [[(torch.full((4,), float("nan")), torch.zeros(1))]]
    with pytest.raises(NonFiniteLossError, match=r"iteration 0 .*loss_mse"):
        _step(Regression(), data)


def test_non_finite_micro_batch_stops_before_the_step():
    """With accumulation, a NaN in the first micro-batch stops the iteration (checked once, after
    the micro-batches) and no optimizer step is taken."""
    data = [[(torch.full((4,), float("nan")), torch.zeros(1))], _batches(1, 1)[0]]
    model = Regression()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match=r"iteration 0 .*loss_mse"):
        _step(model, data, iter_size=2)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_loss_scaler_skipping_the_first_steps_warns_of_nothing():
    """fp16 loss scaling skips the optimizer steps whose scaled gradients overflow (here the
    first ones: a scale of 2**127, gradients of about 10; each skip halves it). The LR scheduler steps every iteration
    all the same, and torch's warning that it stepped before the optimizer is not shown (pytest
    turns warnings into errors); the trainer knows when the first real step came. detectron2's
    own hook warns."""
    from detectron2.engine import hooks as d2_hooks
    from detectron2.solver import LRMultiplier
    from fvcore.common.param_scheduler import LinearParamScheduler

    data = [[(x * 10, y * 10) for x, y in batch] for batch in _batches(8, 2, seed=1)]

    def train(hook_class):
        model = Regression()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        trainer = AccumulatingAMPTrainer(model, data, opt)
        # what the trainer makes on CUDA with amp=True, on the CPU
        trainer.grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)
        trainer.scheduler = LRMultiplier(opt, LinearParamScheduler(1.0, 0.5), max_iter=8)
        trainer.register_hooks([hook_class()])
        steps = []
        opt.register_step_post_hook(lambda *_: steps.append(trainer.iter))
        trainer.train(0, 8)
        return trainer, steps, opt.param_groups[0]["lr"]

    trainer, steps, lr = train(LRScheduler)
    assert steps and steps[0] >= 1, steps  # iteration 0 was skipped, a later one was not
    assert not trainer.optimizer_never_stepped
    assert lr == pytest.approx(1e-3 * 0.5)  # one scheduler step per iteration, skipped or not
    with pytest.warns(UserWarning, match=r"lr_scheduler\.step\(\)` before `optimizer\.step"):
        train(d2_hooks.LRScheduler)


def test_ema_follows_the_formula():
    model = Regression()
    ema = EMAHook(model, decay=0.9)
    w0 = model.linear.weight.detach().clone()
    with torch.no_grad():
        model.linear.weight.add_(1.0)
    ema.after_step()
    torch.testing.assert_close(ema.ema["linear.weight"], 0.9 * w0 + 0.1 * (w0 + 1))
    with ema.swapped():
        torch.testing.assert_close(model.linear.weight, ema.ema["linear.weight"])
    torch.testing.assert_close(model.linear.weight, w0 + 1)  # training weights back


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "model.pth"
    atomic_write(str(path), lambda f: f.write(b"complete"))

    def dies_midway(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), dies_midway)
    assert path.read_bytes() == b"complete"
    assert os.listdir(tmp_path) == ["model.pth"]  # no temp file left


def test_best_checkpoint_does_not_move_last_checkpoint(tmp_path):
    ckpt = AtomicCheckpointer(Regression(), str(tmp_path))
    ckpt.save("model_0000009", iteration=9)
    ckpt.save("model_best", iteration=5)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    loaded = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert loaded["iteration"] == 5


def test_resumable_sampler_continues_the_same_stream():
    full = list(itertools.islice(iter(TrainingSampler(10, seed=3)), 25))
    resumed = ResumableTrainingSampler(10, seed=3)
    resumed.resume_at(17)
    assert list(itertools.islice(iter(resumed), 8)) == full[17:]


def test_sync_batchnorm_becomes_cpu_safe_with_same_state():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.SyncBatchNorm(4))
    model[1].running_mean.fill_(0.5)
    assert cpu_safe_sync_batchnorm(model) == 1
    assert type(model[1]) is NaiveSyncBatchNorm
    torch.testing.assert_close(model[1].running_mean, torch.full((4,), 0.5))


def test_divergence_inside_the_model_names_the_iteration():
    class Diverges(Regression):
        def forward(self, batch):
            raise FloatingPointError("Predicted boxes or scores contain Inf/NaN.")

    with pytest.raises(NonFiniteLossError, match=r"diverged at iteration 0: Predicted boxes"):
        _step(Diverges(), _batches(1, 2))
