"""Several processes: ``trainer.strategy=ddp trainer.devices=2 device=cpu`` (gloo) through the real CLI.

Each process must draw its own XConv probes (the checkpoint holds every rank's generator state),
rank 0 alone writes the summary and the wandb run, and Lightning's DDP children must run the job
they belong to, in its folder, also inside a multirun.
"""
import sys
import types

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import xconv
import xconv_harness.run as harness
from cli_runs import read_summary, run_cli
from xconv_harness.resume import last_checkpoint
from xconv_harness import ddp_launch as launch

# 96 training images, 2 processes, batches of 16: 3 steps per epoch.
SMALL = ["task=classification", "data=digits", "probes=4", "data.train_subset=96", "data.test_subset=32",
         "data.batch_size=16", "data.eval_batch_size=32", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1", "threads=1", "trainer.enable_progress_bar=false"]
DDP = ["trainer.strategy=ddp", "trainer.devices=2", "device=cpu"]
STEPS_PER_EPOCH = 3


def next_call_seed_from(state: torch.Tensor) -> int:
    xconv.set_rng_state(state)
    return xconv.rng.next_call_seed()


def test_two_processes_train_with_their_own_probes_and_rank_0_writes_the_outputs(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(run_dir, *SMALL, *DDP, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    summary = read_summary(run_dir)
    assert summary["processes"] == 2 and summary["train_steps"] == 2 * STEPS_PER_EPOCH  # task: 2 epochs
    states = torch.load(last_checkpoint(run_dir), weights_only=True)["rng_states"]
    assert len(states) == 2
    assert not torch.equal(states[0]["xconv"], states[1]["xconv"])
    assert next_call_seed_from(states[0]["xconv"]) != next_call_seed_from(states[1]["xconv"])
    assert torch.equal(states[0]["torch"], states[1]["torch"])  # the same seed everywhere else
    # Rank 1 ran this job in this folder: its log is here, and it wrote no outputs of its own.
    assert (run_dir / "train_ddp_process_1.log").is_file()
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert not list(tmp_path.glob("outputs")) and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.slow
def test_ddp_jobs_of_a_multirun_each_start_their_own_processes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(sweep_dir, *SMALL, *DDP, "logger=none", "trainer.max_epochs=1", "probes=0,4", multirun=True,
                     timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(path.parent for path in sweep_dir.glob("*/summary.json"))
    assert len(jobs) == 2
    for job in jobs:
        assert read_summary(job)["processes"] == 2 and (job / "train_ddp_process_1.log").is_file()
    assert {read_summary(job)["gradient"]["probes"] for job in jobs} == {0, 4}


@pytest.mark.slow
def test_a_resumed_ddp_run_ends_like_an_uninterrupted_one(tmp_path):
    common = [*SMALL, *DDP, "logger=none", "data.augment=true", "ckpt_every_n_steps=2"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    for run_dir, extra in ((whole, []), (parts, ["trainer.max_steps=4"]), (parts, ["ckpt_path=last"])):
        result = run_cli(run_dir, *common, *extra, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    expected, final = (torch.load(last_checkpoint(path), weights_only=True) for path in (whole, parts))
    assert final["global_step"] == expected["global_step"] == 2 * STEPS_PER_EPOCH
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name
    for mine, theirs in zip(final["rng_states"], expected["rng_states"]):  # every rank's streams
        assert torch.equal(mine["xconv"], theirs["xconv"]) and torch.equal(mine["torch"], theirs["torch"])


# The command a DDP child runs (no processes started) ---------------------------------------------
@pytest.fixture
def hydra_job(monkeypatch):
    """HydraConfig as inside job 1 of ``python -m xconv.run -m -cn config probes=2,4``."""
    with initialize_config_dir(config_dir=str(harness.CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["probes=4"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "/runs/sweep/1_classification_probes4_seed0"
    HydraConfig.instance().set_config(cfg)
    monkeypatch.setattr(sys, "argv", ["xconv/run.py", "-m", "-cn", "config", "probes=2,4"])
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=types.SimpleNamespace(name="xconv.run")))
    yield
    HydraConfig.instance().cfg = None


def test_a_ddp_child_runs_its_parents_job_alone_in_its_folder(hydra_job):
    command, cwd = launch.ddp_child_command(local_rank=1)
    assert command[:3] == [sys.executable, "-m", "xconv.run"]
    assert command[3:] == ["-cn", "config", "probes=4", 'hydra.run.dir="/runs/sweep/1_classification_probes4_seed0"',
                           "hydra.job.name=train_ddp_process_1", "hydra.output_subdir=null"]
    assert "-m" not in command[3:]  # a single run, not the sweep again
    assert cwd == HydraConfig.get().runtime.cwd


# The non-finite guard decides for all processes ----------------------------------------------------
def guarded_ddp_run(run_dir, mode: str):
    """2 DDP processes, step 2: only process 1's loss is NaN (its gradients, and everything else, finite)."""
    from hooked_run import NAN_LOSS, RECORD, run_hooked

    return run_hooked(run_dir, *SMALL, *DDP, "logger=none", f"nonfinite={mode}", "ckpt_every_n_steps=1",
                      faults={NAN_LOSS: "1@2", RECORD: "1"}, timeout=300)


@pytest.mark.slow
def test_nonfinite_stop_ends_every_process_at_the_same_step(tmp_path):
    run_dir = tmp_path / "run"
    result = guarded_ddp_run(run_dir, "stop")
    assert result.returncode == 3, result.stderr[-3000:]
    errors = sorted(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert len(errors) == 2, result.stderr[-3000:]  # one per process, the same step
    assert errors[0].startswith("error: non-finite loss (nan) on process 1 at step 2 "), errors  # process 1's own
    assert errors[1].startswith("error: non-finite loss on process 1 at step 2 "), errors  # process 0, told
    assert [(run_dir / f"exit-rank{rank}.txt").read_text() for rank in (0, 1)] == ["3\n", "3\n"]
    assert torch.load(last_checkpoint(run_dir), weights_only=True)["global_step"] == 2  # nobody stepped on


@pytest.mark.slow
def test_nonfinite_skip_skips_the_same_step_on_every_process(tmp_path):
    run_dir = tmp_path / "run"
    result = guarded_ddp_run(run_dir, "skip")
    assert result.returncode == 0, result.stderr[-3000:]
    weights = [torch.load(run_dir / f"weights-rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    for name, tensor in weights[0].items():
        assert torch.equal(weights[1][name], tensor), name  # the processes still hold one model
    assert read_summary(run_dir)["nonfinite"] == {"mode": "skip", "skipped_steps": 1, "skipped": [
        {"step": 2, "epoch": 0, "batch": 2, "loss_finite": True, "first_nonfinite_grad": None, "processes": [1]}]}
