"""`python -m streamgate`: the same as the `streamgate` command."""

from .server import main

main()
