"""``python -m xconv.run task=<name> probes=<N> [key=value ...]``: the harness's entry point.

The library does not run experiments; this thin entry hands over to the harness
(:mod:`xconv_harness.run`: Hydra configs, Lightning training, wandb and
``summary.json``), which needs the ``harness`` extra. ``import xconv`` never loads
this module.
"""
from __future__ import annotations

import importlib.util
import sys

HARNESS_NEEDS = ("hydra", "lightning", "omegaconf", "wandb", "torchvision")


def main() -> None:
    missing = [name for name in HARNESS_NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        print(f"error: python -m xconv.run needs the harness ({', '.join(missing)} missing): "
              f"pip install 'xconv[harness]'", file=sys.stderr)
        sys.exit(2)
    from xconv_harness.run import main as harness_main

    harness_main()


if __name__ == "__main__":
    main()
