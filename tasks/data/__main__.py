"""``python -m xconv_harness.data fetch mnist [--root DIR] [--offline]`` (see :mod:`xconv_harness.data.fetch`)."""
from .fetch import main

main()
