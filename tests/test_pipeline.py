"""`pipeline`: what the server-level tests cannot see — the garbage a request leaves."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from streamgate.pipeline import ClientWatch, StreamProgress


def test_a_request_s_client_watch_leaves_no_reference_cycle() -> None:
    """The watcher ends cancelled; its traceback must not hold the `ClientWatch` (nor the
    server's request objects), or every request leaves a cycle for the full collections."""

    class Cycle:  # stands for the server's per-request object behind `receive` and `send`
        async def receive(self) -> dict[str, Any]:
            await asyncio.Event().wait()
            return {}

        async def send(self, message: dict[str, Any]) -> None:
            pass

    async def request() -> None:
        cycle = Cycle()
        async with ClientWatch(cycle.receive, cycle.send, StreamProgress(), 15.0):
            await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.get_running_loop().create_task(request())
        await asyncio.sleep(0)  # the watcher's cancellation is delivered
        await asyncio.sleep(0)

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        asyncio.run(main())
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if isinstance(o, (ClientWatch, Cycle, StreamProgress))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []
