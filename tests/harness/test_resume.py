"""Resuming: a run interrupted mid-epoch and resumed with ``ckpt_path=last`` ends with the same
weights, optimiser state and random streams as an uninterrupted one (exact, on CPU).

The exactness runs go through :func:`xconv_harness.run.run` in this process, on scikit-learn's digits with
random crops and flips (torch's global stream), XConv probes (XConv's stream) and a shuffled order;
the interruption is an exception raised by a callback before a chosen step, as a crash would.
The CLI test checks what a resumed run leaves in its run folder.
"""
import random

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch import Callback
from torch.utils.data import TensorDataset

import xconv
import xconv_harness.run as harness
from cli_runs import read_summary, run_cli
from xconv_harness import rng_state
from xconv_harness.resume import check_resume_settings, last_checkpoint
from xconv_harness.data.resumable import ResumableSampler, resumable_loader

STEPS_PER_EPOCH = 6  # 96 training images in batches of 16
EPOCHS = 3
SMALL_RUN = ["task=classification", "data=digits", "probes=4", "data.augment=true", "data.train_subset=96",
             "data.test_subset=32", "data.batch_size=16", "data.eval_batch_size=64", f"trainer.max_epochs={EPOCHS}",
             "ckpt_every_n_steps=2", "threads=1", "trainer.enable_progress_bar=false", "logger=none"]


# The training order -----------------------------------------------------------------------------
def epoch_order(sampler: ResumableSampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_an_epochs_order_depends_on_the_seed_and_the_epoch_only():
    data = range(50)
    walked = ResumableSampler(data, shuffle=True, seed=3)
    orders = [epoch_order(walked, epoch) for epoch in range(3)]
    assert epoch_order(ResumableSampler(data, shuffle=True, seed=3), 2) == orders[2]  # no history needed
    assert orders[0] != orders[1] and sorted(orders[1]) == list(range(50))
    assert epoch_order(ResumableSampler(data, shuffle=True, seed=4), 2) != orders[2]


def test_ranks_share_out_each_epoch():
    data = range(40)
    shares = [epoch_order(ResumableSampler(data, shuffle=True, seed=0, num_replicas=2, rank=rank), 1)
              for rank in range(2)]
    assert len(shares[0]) == len(shares[1]) == 20
    assert sorted(shares[0] + shares[1]) == list(range(40))


def test_the_loader_resumes_mid_epoch_with_the_remaining_batches():
    data = TensorDataset(torch.arange(23))
    uninterrupted = resumable_loader(data, batch_size=4, shuffle=True, seed=1)
    uninterrupted.sampler.set_epoch(1)
    expected = [batch[0].tolist() for batch in uninterrupted]

    interrupted = resumable_loader(data, batch_size=4, shuffle=True, seed=1)
    interrupted.sampler.set_epoch(1)
    iterator = iter(interrupted)
    seen = [next(iterator)[0].tolist() for _ in range(2)]
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "batches": 2} and seen == expected[:2]

    resumed = resumable_loader(data, batch_size=4, shuffle=True, seed=1)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)  # Lightning sets the epoch after loading the state
    assert [batch[0].tolist() for batch in resumed] == expected[2:]
    assert resumed.state_dict() == {"epoch": 1, "batches": len(expected)}  # counts the skipped ones
    resumed.sampler.set_epoch(2)  # the next epoch is whole again
    assert len([batch for batch in resumed]) == len(expected)


class RandomDraws(torch.utils.data.Dataset):
    """Item i: i and one draw of each of torch's, NumPy's and Python's global streams."""

    def __len__(self):
        return 20

    def __getitem__(self, index):
        return torch.tensor([index, torch.rand(()).item(), np.random.rand(), random.random()], dtype=torch.float64)


def epoch_draws(workers: int, resume_after: int = 0, epoch: int = 1) -> torch.Tensor:
    loader = resumable_loader(RandomDraws(), batch_size=4, shuffle=True, seed=1, num_workers=workers)
    if resume_after:
        loader.load_state_dict({"epoch": epoch, "batches": resume_after})
    loader.sampler.set_epoch(epoch)
    return torch.cat(list(loader))


def test_with_workers_a_samples_random_draws_depend_on_seed_epoch_and_place_only():
    """Whatever the number of workers and wherever the epoch resumes, a sample draws the same numbers."""
    whole = epoch_draws(workers=2)
    assert torch.equal(epoch_draws(workers=1), whole)
    assert torch.equal(epoch_draws(workers=2, resume_after=2), whole[8:])
    assert len(set(whole[:, 1].tolist())) == len(whole)  # every sample its own draws
    assert not torch.equal(epoch_draws(workers=2, epoch=2)[:, 1:].sort(0).values, whole[:, 1:].sort(0).values)


# Random streams --------------------------------------------------------------------------------
def draw_from_every_stream() -> list:
    layer = xconv.XConv2d(2, 2, 3, probes=2)
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    layer(x).sum().backward()
    return [torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(), xconv.get_rng_state()]


def test_random_streams_survive_a_checkpoint_file(tmp_path):
    draw_from_every_stream()
    saved = tmp_path / "streams.pt"
    torch.save(rng_state.gather(), saved)
    first = draw_from_every_stream()
    rng_state.restore_for_this_rank(torch.load(saved, weights_only=True))  # as Lightning loads checkpoints
    second = draw_from_every_stream()
    assert first[:3] == second[:3] and torch.equal(first[3], second[3])


# Interrupt and resume -------------------------------------------------------------------------
class Interrupted(RuntimeError):
    pass


class InterruptAfter(Callback):
    """Raise once ``steps`` optimiser steps are done, before the next batch trains, like a crash."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.steps:
            raise Interrupted(f"interrupted after {self.steps} steps")


def small_run_config(out_dir, *overrides):
    with initialize_config_dir(config_dir=str(harness.CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[*SMALL_RUN, f"out_dir={out_dir}", *overrides])


def final_state(out_dir) -> dict:
    return torch.load(last_checkpoint(out_dir), weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Final checkpoints of uninterrupted runs, by their overrides."""
    finals = {}

    def get(*overrides: str) -> dict:
        if overrides not in finals:
            out_dir = tmp_path_factory.mktemp("uninterrupted")
            harness.run(small_run_config(out_dir, *overrides))
            finals[overrides] = final_state(out_dir)
        return finals[overrides]
    return get


def interrupt(out_dir, steps: int, overrides: list[str], monkeypatch) -> None:
    """A run that crashes after ``steps`` steps."""
    with monkeypatch.context() as patch:
        build_callbacks = harness.build_callbacks
        patch.setattr(harness, "build_callbacks", lambda cfg, out: [*build_callbacks(cfg, out), InterruptAfter(steps)])
        with pytest.raises(Interrupted):
            harness.run(small_run_config(out_dir, *overrides))


@pytest.mark.parametrize("stop,steps,scheduler,workers", [
    ("crash", 9, "plateau", 0),          # mid-epoch 2: resumes from step 8, 2 batches into the epoch
    ("crash", 13, "plateau", 0),         # after an epoch's end: from the next epoch's first batch (step 13)
    ("crash", 9, "warmup_cosine", 0),    # a per-step schedule that reads trainer.estimated_stepping_batches
    ("max_steps", 9, "plateau", 0),      # a run stopped by trainer.max_steps mid-epoch, then extended
    ("crash", 9, "plateau", 2),          # the augmentation drawn in two worker processes
])
def test_an_interrupted_and_resumed_run_ends_exactly_like_an_uninterrupted_one(
        tmp_path, monkeypatch, uninterrupted, stop, steps, scheduler, workers):
    overrides = [f"scheduler@task.scheduler={scheduler}", f"data.num_workers={workers}"]
    expected = uninterrupted(*overrides)
    out_dir = tmp_path / "run"
    if stop == "crash":
        interrupt(out_dir, steps, overrides, monkeypatch)
    else:
        harness.run(small_run_config(out_dir, *overrides, f"trainer.max_steps={steps}"))
    left = final_state(out_dir)
    assert steps - 2 < left["global_step"] <= steps  # a checkpoint from the last two steps
    position = left["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert 0 < position["batches"] < STEPS_PER_EPOCH  # taken mid-epoch

    summary = harness.run(small_run_config(out_dir, *overrides, "ckpt_path=last"))
    assert summary["resumed_from"] == str(last_checkpoint(out_dir))
    final = final_state(out_dir)
    assert final["global_step"] == expected["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert final["state_dict"].keys() == expected["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name
    assert any(not torch.equal(left["state_dict"][name], tensor) for name, tensor in expected["state_dict"].items())
    for mine, theirs in zip(final["optimizer_states"][0]["state"].values(),
                            expected["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(mine[key], theirs[key]) for key in theirs)
    assert final["lr_schedulers"] == expected["lr_schedulers"]
    for stream in ("torch", "xconv"):
        assert torch.equal(final["rng_states"][0][stream], expected["rng_states"][0][stream]), stream


def test_resume_settings_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match=r"ckpt_path=last: no checkpoint .*last.ckpt.*hydra.run.dir="):
        check_resume_settings(small_run_config(tmp_path, "ckpt_path=last"))
    with pytest.raises(ValueError, match=r"ckpt_path='/nowhere/x.ckpt': no such checkpoint file"):
        check_resume_settings(small_run_config(tmp_path, "ckpt_path=/nowhere/x.ckpt"))
    check_resume_settings(small_run_config(tmp_path, "ckpt_path=auto"))  # nothing yet: starts fresh


# Through the CLI -------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_resume_continues_the_run_folder_and_keeps_the_first_attempts_outputs(tmp_path):
    run_dir = tmp_path / "run"
    quick = ["task=classification", "data=digits", "probes=4", "data.train_subset=64", "data.test_subset=32",
             "data.batch_size=16", "data.eval_batch_size=32", "trainer.limit_val_batches=1", "threads=1",
             "trainer.enable_progress_bar=false"]

    first = run_cli(run_dir, *quick, "trainer.max_steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    wandb_id = (run_dir / "wandb_run_id").read_text().strip()
    resumed = run_cli(run_dir, *quick, "trainer.max_steps=4", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    summary = read_summary(run_dir)
    assert summary["train_steps"] == 4 and summary["resumed_from"].endswith("checkpoints/last.ckpt")
    assert "ckpt_path: null" in (run_dir / ".hydra" / "config.yaml").read_text()  # the first attempt's
    [resume_files] = (run_dir / ".hydra").glob("resume-*")
    assert "ckpt_path: last" in (resume_files / "config.yaml").read_text()
    assert (run_dir / "csv" / "metrics.csv").is_file() and (run_dir / "csv" / "resume-1" / "metrics.csv").is_file()
    assert (run_dir / "wandb_run_id").read_text().strip() == wandb_id
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{wandb_id}"))) == 2  # one wandb run, two attempts
