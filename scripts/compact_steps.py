"""How xconv.compact's derivative steps were made, recomputed beside the committed ones.

The construction lives in :mod:`xconv_harness.studies.compact_steps` (its docstring has the method).

    python scripts/compact_steps.py
"""
from xconv_harness.studies.compact_steps import main

if __name__ == "__main__":
    main()
