"""The FID feature extractor's accuracy on the whole test set of a generative table's dataset.

Every run of a generative table (e.g. ``conf/experiment/cpu_ddpm_mnist.yaml``) scores its samples with
one extractor: trained with ``task.fid_seed`` for ``task.fid_epochs`` epochs on the dataset's whole
training set and cached under ``task.fid_cache_dir`` (:func:`xconv_harness.fid.extractor_for`), so
the same for every run seed. A run logs the extractor's accuracy on its own FID images only; this
study loads (or trains) the very extractor a run of ``--experiment`` uses, exactly as the run does,
and classifies the dataset's whole test set.

    python scripts/fid_extractor.py                                  # cpu_ddpm_mnist
    python scripts/fid_extractor.py --experiment cpu_ddpm_mnist data.dataset=digits
"""
from __future__ import annotations

import argparse

from .. import fid
from ..config_files import compose_experiment

def extractor_accuracy(experiment: str, overrides: tuple[str, ...] = ()) -> dict:
    """``{"accuracy", "images", "dataset", "fid_seed", "fid_epochs"}``: the run extractor's accuracy on the
    whole test set."""
    from ..run import build

    cfg = compose_experiment(experiment, overrides)
    if cfg.task.name != "generative":
        raise ValueError(f"--experiment={experiment}: task={cfg.task.name}, not generative (no FID extractor)")
    datamodule, _, task = build(cfg)
    images, labels = datamodule.extractor_test_data()
    net = fid.extractor_for(datamodule, cache_dir=task.fid_cache_dir, dataset=task.dataset, seed=task.fid_seed,
                            epochs=task.fid_epochs, in_channels=images.shape[1], image_size=images.shape[-1])
    return {"accuracy": fid.extractor_accuracy(net, images, labels), "images": len(labels), "dataset": task.dataset,
            "fid_seed": task.fid_seed, "fid_epochs": task.fid_epochs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="cpu_ddpm_mnist", help="a generative experiment config")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for python -m xconv.run")
    args = parser.parse_args(argv)
    result = extractor_accuracy(args.experiment, tuple(args.overrides))
    print(f"{args.experiment}: FID extractor (dataset {result['dataset']}, fid_seed {result['fid_seed']}, "
          f"{result['fid_epochs']} epochs) classifies {100 * result['accuracy']:.2f} % of the "
          f"{result['images']} test images")
    return result
