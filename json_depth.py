"""How deep a JSON text nests, found without decoding it: the request's own limit
(`MAX_DEPTH`), shared by the pipeline (a request body) and the adapters (JSON inside a
request's strings: tool arguments and results)."""

from __future__ import annotations

import itertools

#: The deepest nesting of objects and arrays a request may have (the top-level object is
#: level 1). No chat request needs as many; far deeper, the decoder would recurse too far.
MAX_DEPTH = 64
_NOT_OPENERS = bytes(sorted(set(range(256)) - set(b"[{")))
_NOT_MARKS = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes


def nesting_depth(body: bytes) -> int:
    """The deepest nesting of objects and arrays in `body`, in C-speed passes: the escapes
    `\\\\` and `\\"` removed (so every `"` left opens or closes a string), only quotes and
    brackets kept, the parts outside strings joined, their brackets made +1/-1 steps; the
    deepest running sum is the depth. Exact for valid JSON; for invalid JSON at least the
    depth of its valid prefix, which is all a decoder reads."""
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(body.translate(None, _NOT_MARKS).split(b'"')[::2])
    return max(itertools.accumulate(memoryview(outside.translate(_DEPTH_STEP)).cast("b")), default=0)


def too_deep(body: bytes) -> bool:
    """Whether `body` nests deeper than `MAX_DEPTH`; scanned only when it opens more than
    `MAX_DEPTH` objects and arrays at all (one C-speed count)."""
    return len(body.translate(None, _NOT_OPENERS)) > MAX_DEPTH and nesting_depth(body) > MAX_DEPTH
