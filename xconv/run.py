"""The experiment harness: ``python -m xconv.run task=<name> probes=<N> [key=value ...]``.

The only module that wires Hydra (configs under ``conf/``) to Lightning and the
tasks. One run: validate the config, build data and model, convert the model's
convolutions (``probes=0``: exact backprop), train, validate and test, then
write ``summary.json`` (metrics, activation and peak memory, step time, config,
versions) in the run folder and log the same to wandb (offline unless
``WANDB_MODE`` says otherwise). ``-m`` sweeps (Hydra multirun): one run, one
folder and one wandb run per job.
"""
from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")  # never needs an account or a network

import datetime
import json
import platform
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _instantiate(node: DictConfig, **kwargs):
    """``hydra.utils.instantiate`` without the harness's descriptive keys."""
    from tasks.validate import META_KEYS

    config = OmegaConf.to_container(node, resolve=True)
    for key in META_KEYS:
        config.pop(key, None)
    return hydra.utils.instantiate(config, **kwargs, _recursive_=False)


def build_loggers(cfg: DictConfig, out_dir: Path, run_name: str):
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    loggers = [CSVLogger(save_dir=str(out_dir), name="csv", version="")]
    if cfg.logger.kind == "wandb":
        loggers.append(WandbLogger(
            project=cfg.logger.project, group=cfg.logger.group, tags=list(cfg.logger.tags),
            name=run_name, save_dir=str(out_dir),
            config=OmegaConf.to_container(cfg, resolve=True)))
    return loggers


def versions() -> dict:
    import lightning
    import torch

    import xconv

    return {"python": platform.python_version(), "torch": torch.__version__,
            "lightning": lightning.__version__, "hydra": hydra.__version__, "xconv": xconv.__version__}


def write_json_atomically(path: Path, payload: dict) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    partial.replace(path)


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
    L.seed_everything(cfg.seed, workers=True)  # seeds torch and, through it, XConv's generator
    datamodule = _instantiate(cfg.data, seed=cfg.seed)
    datamodule.check()
    model = _instantiate(cfg.model)
    if cfg.probes > 0 or cfg.relu == "bit":
        xconv.convert(model, probes=cfg.probes, probe=cfg.probe, relu=cfg.relu == "bit",
                      skip=list(cfg.model.get("exact_layers") or []))
    task = _instantiate(cfg.task, model=model)
    return datamodule, model, task


def run(cfg: DictConfig) -> dict:
    """Train, validate and test one configuration; return its summary."""
    return train_and_test(cfg, *build(cfg))


def train_and_test(cfg: DictConfig, datamodule, model, task) -> dict:
    import lightning as L

    import xconv
    from tasks.monitor import StepMonitor

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_name = f"{cfg.task.name}-{cfg.data.name}-probes{cfg.probes}-{cfg.probe}-seed{cfg.seed}"
    monitor = StepMonitor(memory_steps=cfg.memory_steps)
    trainer = L.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True),
                        logger=build_loggers(cfg, out_dir, run_name), callbacks=[monitor],
                        default_root_dir=str(out_dir))
    started = time.perf_counter()
    trainer.fit(task, datamodule=datamodule)
    val_metrics = _val_metrics(trainer)
    if not val_metrics:  # training stopped before a validation pass (e.g. max_steps mid-epoch)
        trainer.validate(task, datamodule=datamodule, verbose=False)
        val_metrics = _val_metrics(trainer)
    test_metrics = _plain_metrics(trainer.test(task, datamodule=datamodule, verbose=False)[0])
    summary = {
        "task": cfg.task.name, "data": cfg.data.name, "model": cfg.model.name,
        "gradient": {"mode": "exact" if cfg.probes == 0 else "xconv", "probes": cfg.probes,
                     "probe": cfg.probe, "relu": cfg.relu,
                     "xconv_layers": [name for name, layer in xconv.xconv_layers(model) if layer.probes > 0]},
        "seed": cfg.seed,
        "metrics": {**val_metrics, **test_metrics},
        **monitor.summary(),
        "train_steps": trainer.global_step,
        "wall_time_s": time.perf_counter() - started,
        "device": str(task.device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "command": " ".join(["python -m xconv.run", *sys.argv[1:]]),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json_atomically(out_dir / "summary.json", summary)
    _finish_wandb(trainer, summary)
    _print_summary(summary, out_dir)
    return summary


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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig):
    from hydra.errors import InstantiationException

    from tasks.data import DatasetNotFound
    from tasks.validate import ConfigError, validate

    try:  # everything that can be wrong with the settings fails here, before training
        validate(cfg)
        parts = build(cfg)
    except (ConfigError, DatasetNotFound, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except InstantiationException as error:
        if not isinstance(error.__cause__, (ValueError, TypeError)):
            raise
        print(f"error: {error.__cause__}", file=sys.stderr)
        sys.exit(2)
    return train_and_test(cfg, *parts)


if __name__ == "__main__":
    main()
