"""`python -m streamgate`: the same as the `streamgate` command."""

from streamgate.server import main

main()
