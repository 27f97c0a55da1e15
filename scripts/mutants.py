"""Mutation testing: deliberate bugs in a copy of the library, and whether the fast tests catch them.

The study lives in :mod:`xconv_harness.studies.mutants` (its docstring has the method and the options).

    python scripts/mutants.py --out results/mutants
"""
from xconv_harness.studies.mutants import main

if __name__ == "__main__":
    main()
