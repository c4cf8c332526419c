"""Sizes as people read them."""

from __future__ import annotations


def human_bytes(count: int) -> str:
    """Decimal units, as Supabase states its 5 GB budget."""
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(count) >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count} bytes"


def readable_number(name: str, value: object) -> str | None:
    """A whole number as people read it, or None where the digits already are that.

    A count of bytes (``egress_bytes``, ``bytes_sent``) becomes ``42.54 MB (42,541,286 bytes)``;
    any other count of four digits or more gets thousands separators.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if "bytes" in name.split("_"):
        return f"{human_bytes(value)} ({value:,} bytes)" if abs(value) >= 1000 else f"{value} bytes"
    return f"{value:,}" if abs(value) >= 1000 else None
