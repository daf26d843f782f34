"""`python -m bench [--quick] [--provider ...]`: the mock bench (`bench/run.py`), as before.

Subcommands: `live` (real providers through the gateway and direct, `bench/live.py`),
`report RESULT.json` (`bench/report.py`), `compare A.json B.json` (`bench/compare.py`).
"""

import sys
from importlib import import_module

SUBCOMMANDS = {"live": "bench.live", "report": "bench.report", "compare": "bench.compare"}

if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
    sys.exit(import_module(SUBCOMMANDS[sys.argv[1]]).main(sys.argv[2:]))

from bench.run import main  # noqa: E402 - after the subcommands: the mock bench is the default

main()
