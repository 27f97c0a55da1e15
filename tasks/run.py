"""The experiment harness: ``python -m xconv.run task=<name> probes=<N> [key=value ...]``.

The only module that wires Hydra (configs under ``conf/``) to Lightning and the
tasks. One run: validate the config, build data and model, convert the model's
convolutions (``probes=0``: exact backprop), train, validate and test, then
write ``summary.json`` (metrics, activation and peak memory, step time, config,
versions) in the run folder and log the same to wandb (offline unless
``WANDB_MODE`` says otherwise). ``-m`` sweeps (Hydra multirun): one run, one
folder and one wandb run per job. Before Hydra starts, :func:`main` checks the command
line (tasks/cli_errors.py): whatever cannot run ends in one ``error:`` line, exit code 2.
"""
from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")  # never needs an account or a network

import logging
import platform
import sys
import time
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from . import config_nodes, ddp_launch as launch, summary as summary_file
from .config_files import CONFIG_DIR

launch.register_resolvers()  # conf/config.yaml's hydra.output_subdir uses it


_instantiate = config_nodes.instantiate  # descriptive keys dropped unless the target takes them
# Console lines that are not about the run: (logger, message start) of Lightning's info lines, and
# (message pattern, category) of warnings third-party code raises about other third-party code.
NOT_ABOUT_THE_RUN = {
    "log": [("lightning.pytorch.utilities.rank_zero", "💡 Tip:")],  # "try installing litlogger"
    "warnings": [(r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)],  # Lightning on torch
}


class _DropLines:
    """A logging filter that drops records whose message starts with ``start``."""

    def __init__(self, start: str):
        self.start = start

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(self.start)


def quiet_console() -> None:
    """Keep the console to the run: silence the lines of :data:`NOT_ABOUT_THE_RUN`."""
    for name, start in NOT_ABOUT_THE_RUN["log"]:
        logging.getLogger(name).addFilter(_DropLines(start))
    for pattern, category in NOT_ABOUT_THE_RUN["warnings"]:
        warnings.filterwarnings("ignore", message=pattern, category=category)


def build_loggers(cfg: DictConfig, out_dir: Path, run_name: str, resuming: bool = False):
    """CSV (a resumed run writes csv/resume-<n>/) and wandb (a resumed run continues its wandb run)."""
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from xconv_harness.resume import csv_version, wandb_run_id

    loggers = [CSVLogger(save_dir=str(out_dir), name="csv", version=csv_version(out_dir, resuming))]
    if cfg.logger.kind == "wandb":
        wandb_logger = WandbLogger(
            project=cfg.logger.project, group=cfg.logger.group, tags=list(cfg.logger.tags),
            name=run_name, save_dir=str(out_dir), id=wandb_run_id(out_dir, resuming),
            resume="allow" if resuming else None, config=OmegaConf.to_container(cfg, resolve=True))
        # Lightning always passes wandb ``anonymous`` (None), a setting wandb has deprecated and warns about
        vars(wandb_logger).get("_wandb_init", {}).pop("anonymous", None)
        loggers.append(wandb_logger)
    return loggers


def versions() -> dict:
    import lightning
    import torch

    import xconv

    return {"python": platform.python_version(), "torch": torch.__version__,
            "lightning": lightning.__version__, "hydra": hydra.__version__, "xconv": xconv.__version__}


def machine(device) -> str:
    """The machine a run used, e.g. ``AMD EPYC ..., 2 logical CPUs, torch threads 1, device cpu``."""
    import torch

    from xconv_harness.run_files import cpu_model

    text = f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, device {device}"
    if getattr(device, "type", None) == "cuda":
        text += f" ({torch.cuda.get_device_name(device)})"
    return text


def _plain_metrics(metrics: dict) -> dict:
    return {key: float(value) for key, value in metrics.items()}


def _val_metrics(trainer) -> dict:
    return _plain_metrics({k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")})


def build(cfg: DictConfig):
    """Data (checked), the converted model and the task; raises on bad settings, trains nothing."""
    import lightning as L
    import torch

    import xconv

    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(bool(cfg.get("flush_denormal", True)))  # CPU speed; see conf/config.yaml
    # Seeds torch and, through it, XConv's generator (quietly: the seed is in summary.json)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = _instantiate(cfg.data, "data", seed=cfg.seed)
    datamodule.check()
    model = _instantiate(cfg.model, "model")
    if cfg.probes > 0 or cfg.relu == "bit" or cfg.activations != "exact":
        xconv.convert(model, probes=cfg.probes, probe=cfg.probe, relu=cfg.relu == "bit", activations=cfg.activations,
                      skip=list(cfg.model.get("exact_layers") or []))
        if not cfg.probe_cap:  # keep every layer's probes, as the paper does (xconv.layers: fallback)
            for _, layer in xconv.xconv_layers(model):
                layer.fallback = False
    # Recompute sequential parts in backward; budget:<bytes> plans at the first training step (xconv/planner.py)
    xconv.checkpoint_sequential(model, cfg.get("checkpoint", "none"), measure_recompute=True)
    task = _instantiate(cfg.task, "task", model=model)
    return datamodule, model, task


def run(cfg: DictConfig) -> dict:
    """Train, validate and test one configuration; return its summary."""
    return train_and_test(cfg, *build(cfg))


def build_callbacks(cfg: DictConfig, out_dir: Path) -> list:
    """Callbacks besides the step monitor: checkpoints/last.ckpt for resuming, the non-finite guard
    (tasks/guard.py) and probe caps (tasks/probe_cap.py)."""
    from xconv_harness.resume import CHECKPOINT_DIR, LastCheckpoint
    from xconv_harness.guard import NonFiniteGuard
    from xconv_harness.probe_cap import ProbeCap

    return [LastCheckpoint(out_dir / CHECKPOINT_DIR, every_n_train_steps=cfg.ckpt_every_n_steps),
            NonFiniteGuard(cfg.nonfinite), *([ProbeCap()] if cfg.probe_cap else [])]


def _callback_summaries(callbacks) -> dict:
    """What callbacks add to summary.json (their ``summary_fields()``: non-finite steps, probe caps)."""
    return {key: value for callback in callbacks if hasattr(callback, "summary_fields")
            for key, value in callback.summary_fields().items()}


def train_and_test(cfg: DictConfig, datamodule, model, task) -> dict:
    import lightning as L

    from xconv_harness.resume import resolve_ckpt_path
    from xconv_harness.monitor import StepMonitor

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    resume_from = resolve_ckpt_path(cfg.ckpt_path, out_dir)
    run_name = f"{cfg.task.name}-{cfg.data.name}-probes{cfg.probes}-{cfg.probe}-seed{cfg.seed}"
    monitor = StepMonitor(memory_steps=cfg.memory_steps)
    trainer = L.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True),
                        logger=build_loggers(cfg, out_dir, run_name, resuming=resume_from is not None),
                        callbacks=[monitor, *build_callbacks(cfg, out_dir)], default_root_dir=str(out_dir))
    started = time.perf_counter()
    trainer.fit(task, datamodule=datamodule, ckpt_path=resume_from)
    val_metrics = _val_metrics(trainer)
    if not val_metrics:  # training stopped before a validation pass (e.g. max_steps mid-epoch)
        trainer.validate(task, datamodule=datamodule, verbose=False)
        val_metrics = _val_metrics(trainer)
    test_metrics = _plain_metrics(trainer.test(task, datamodule=datamodule, verbose=False)[0])
    summary = summary_file.build(
        cfg, model=model, trainer=trainer, device=task.device, metrics={**val_metrics, **test_metrics},
        measured={**monitor.summary(), **_callback_summaries(trainer.callbacks)},
        gradient_mode=_gradient_mode(model), checkpoint_plan=_checkpoint_summary(model),
        resumed_from=resume_from, started=started, machine=machine(task.device), versions=versions())
    if trainer.is_global_zero:  # DDP: one summary and one wandb run, written by rank 0
        summary_file.write(out_dir, summary)
        _finish_wandb(trainer, summary)
        _print_summary(summary, out_dir)
    return summary


def _gradient_mode(model) -> str:
    """``exact``, ``xconv``, ``checkpoint`` or ``xconv+checkpoint``, from what the model does now."""
    import xconv

    uses_xconv = any(layer.probes > 0 for _, layer in xconv.xconv_layers(model))
    plan = xconv.checkpoint_plan(model)
    parts = ["xconv"] * uses_xconv + ["checkpoint"] * bool(plan is not None and plan.segments)
    return "+".join(parts) or "exact"


def _checkpoint_summary(model) -> dict | None:
    import xconv

    plan = xconv.checkpoint_plan(model)
    return plan.summary() if plan is not None else None


def _finish_wandb(trainer, summary: dict) -> None:
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            flat = {f"summary/{k}": v for k, v in summary["metrics"].items()}
            flat["summary/saved_bytes"] = summary["activation_memory"]["saved_bytes"]
            flat["summary/peak_bytes"] = summary["peak_memory"]["bytes"]
            flat["summary/median_step_s"] = summary["time"]["median_step_s"]
            logger.experiment.summary.update(flat)
    import wandb

    wandb.finish()  # one wandb run per job, also inside a multirun


def _print_summary(summary: dict, out_dir: Path) -> None:
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(summary["metrics"].items()))
    saved = summary["activation_memory"]["saved_bytes"]
    print(f"\n[xconv.run] {summary['task']} probes={summary['gradient']['probes']}: {metrics}")
    print(f"[xconv.run] activation memory {saved if saved is None else f'{saved / 2**20:.2f} MiB'}, "
          f"median step {summary['time']['median_step_s'] * 1e3:.1f} ms, summary: {out_dir / 'summary.json'}")


def run_job(cfg: DictConfig) -> dict:
    """One job: every setting checked first (a bad one raises SettingsError), then train and test."""
    from xconv_harness.resume import check_resume_settings
    from xconv_harness.data import DatasetNotFound
    from xconv_harness.validate import ConfigError, validate
    from xconv_harness.job_reporting import SettingsError
    from xconv.planner import BudgetError

    try:  # everything that can be wrong with the settings fails here, before training
        validate(cfg)
        check_resume_settings(cfg)
        parts = build(cfg)
    except (ConfigError, DatasetNotFound, ValueError) as error:  # ConfigError: also a constructor's refusal
        raise SettingsError(str(error)) from error
    launch.use_ddp_child_command()  # trainer.strategy=ddp: children run this job, in this folder
    with launch.ddp_job():
        try:
            return train_and_test(cfg, *parts)
        except BudgetError as error:  # checkpoint=budget:<bytes> is planned on the first training batch
            raise SettingsError(str(error)) from error


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def hydra_main(cfg: DictConfig):
    from xconv_harness.job_reporting import reporting_errors

    with reporting_errors():  # exit 2: settings, 3: non-finite; a multirun records a failure and goes on
        return run_job(cfg)


def main() -> None:
    """``python -m xconv.run``: a command line that cannot run ends here, in one ``error:`` line with
    exit code 2 and no run folder (tasks/cli_errors.py); one that can goes to Hydra."""
    quiet_console()
    # Lightning, imported by the check, sees a root handler and so logs through Hydra's (run.log) later
    placeholder = logging.NullHandler()
    logging.getLogger().addHandler(placeholder)
    try:
        from xconv_harness.cli_errors import refuse_bad_command_line

        refuse_bad_command_line(sys.argv[1:])
    finally:
        logging.getLogger().removeHandler(placeholder)
    hydra_main()


if __name__ == "__main__":
    main()
