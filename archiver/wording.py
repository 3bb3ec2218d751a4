"""How counts read in messages: `1 window`, `2 windows`; integers printed plainly (`1008000`).

Durations are written by `timeparse.compact_duration` (`8d`, `1h30m`).
"""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`1 window`, `0 windows`, `3 retries` (with `plural_form` where `s` is not the plural)."""
    word = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{count} {word}"
