"""Layer-by-layer activation memory of torchvision networks: exact vs XConv vs XConv + 1-bit ReLU.

The study lives in :mod:`xconv_harness.studies.layer_memory` (its docstring has the method and the options).

    python scripts/layer_memory.py --out results/layer_memory   # the paper's setting, ~10 s
    python scripts/layer_memory.py --networks resnet18 --batch 1 --size 64 --probes 4
"""
from xconv_harness.studies.layer_memory import main

if __name__ == "__main__":
    main()
