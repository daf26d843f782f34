"""The prompts of `python -m bench live`: a built-in set of short and long ones, or a file
with one prompt per line (blank lines skipped)."""

from __future__ import annotations

from pathlib import Path

_CONTEXT = (
    "A small town's library keeps a ledger of every book lent since 1952: the borrower's "
    "initials, the date out, the date back, and a one-line note from the librarian. "
)

BUILT_IN: tuple[str, ...] = (
    "Say hello in five words.",
    "What is the capital of Portugal? One word.",
    "Name three prime numbers.",
    "Explain in two sentences what a hash table is.",
    "Write a haiku about streaming data.",
    "List four uses of a paperclip, one per line.",
    # long prompts: the time to first token grows with the prompt on most providers
    _CONTEXT * 12 + "Summarize what such a ledger could tell a historian, in one paragraph.",
    "Read this and answer briefly. " + _CONTEXT * 24 + "Which fields of the ledger are personal data?",
)


def load(path: str | None) -> list[str]:
    """The prompts of `path` (one per line), or the built-in set."""
    if path is None:
        return list(BUILT_IN)
    prompts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    prompts = [prompt for prompt in prompts if prompt]
    if not prompts:
        raise ValueError(f"{path}: no prompt (one per line)")
    return prompts


def nth(prompts: list[str], index: int) -> str:
    """The prompt of request `index`: the set repeats when there are more requests than prompts."""
    return prompts[index % len(prompts)]
