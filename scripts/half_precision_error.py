"""XConv's gradient error in bfloat16 against the rounding error of exact bfloat16 gradients.

The study lives in :mod:`xconv_harness.studies.half_precision_error` (its docstring has the method and the options).

    python scripts/half_precision_error.py                 # default scale, ~4 min on one thread
    python scripts/half_precision_error.py --networks unet --sizes 16 --subset 16 --batch 4 --probes 2,32
"""
from xconv_harness.studies.half_precision_error import main

if __name__ == "__main__":
    main()
