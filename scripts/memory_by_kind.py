"""Activation memory of a torchvision network by layer kind: exact vs XConv vs XConv + 1-bit ReLU.

The study lives in :mod:`xconv_harness.studies.memory_by_kind` (its docstring has the method and the options).

    python scripts/memory_by_kind.py                       # resnet18, batch 8 at 224x224, r=16
    python scripts/memory_by_kind.py --model resnet50 --batch 4 --size 224 --out results/memory_by_kind.md
"""
from xconv_harness.studies.memory_by_kind import main

if __name__ == "__main__":
    main()
