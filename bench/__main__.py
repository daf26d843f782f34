"""`python -m bench [--quick] [--provider ...]`: see `bench/run.py`."""

from bench.run import main

main()
