"""streamgate: a lean, fast streaming gateway for LLM chat.

The repository root is this package (`pyproject.toml` maps it to `streamgate`), so a
checkout keeps `server.py`, `sse.py` and `providers/` at the top while an installed
wheel puts exactly one name, `streamgate`, into site-packages.
"""

import sys

if __name__ != "streamgate":  # imported by its folder's name (pytest does, for the root's package):
    import importlib  # one identity only, `streamgate`'s

    sys.modules[__name__] = importlib.import_module("streamgate")
