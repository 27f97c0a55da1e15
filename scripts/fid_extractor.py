"""The FID feature extractor's accuracy on the whole test set of a generative table's dataset.

The study lives in :mod:`xconv_harness.studies.fid_extractor` (its docstring has the method).

    python scripts/fid_extractor.py                  # cpu_ddpm_mnist: the extractor every run uses
"""
from xconv_harness.studies.fid_extractor import main

if __name__ == "__main__":
    main()
