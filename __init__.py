"""streamgate: a lean, fast streaming gateway for LLM chat.

The repository root is this package (`pyproject.toml` maps it to `streamgate`), so a
checkout keeps `server.py`, `sse.py` and `providers/` at the top while an installed
wheel puts exactly one name, `streamgate`, into site-packages.
"""
