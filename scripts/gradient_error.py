"""Average gradient error (the paper's Eq. 9) of exact minibatches and XConv, vs the probe count r.

The study lives in :mod:`xconv_harness.studies.gradient_error` (its docstring has the method and the options).

    python scripts/gradient_error.py                       # default scale, ~8 min on one thread
    python scripts/gradient_error.py --networks unet --sizes 16 --subset 16 --batch 4 --probes 2,64
"""
from xconv_harness.studies.gradient_error import main

if __name__ == "__main__":
    main()
