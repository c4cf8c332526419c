"""Sizes as people read them."""

from __future__ import annotations


def human_bytes(count: int) -> str:
    """Decimal units, as Supabase states its 5 GB budget."""
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(count) >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count} bytes"
