"""How pg_dump patterns and listings spell names: quoted patterns, ``schema.table``, bare or quoted forms."""

from __future__ import annotations

import re


def parse_qualified(name: str) -> tuple[str, str]:
    """``schema.table`` (the first dot splits) into its parts; a bare name is in ``public``."""
    schema, dot, table = name.partition(".")
    return (schema, table) if dot else ("public", schema)


def quote_pattern(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")
# The characters of an operator's name, as a regular expression character class's content.
OPERATOR_CHARS = r"+\-*/<>=~!@#%^&|`?"
_OPERATOR_NAME = re.compile(f"[{OPERATOR_CHARS}]+")


def name_forms(name: str) -> tuple[str, ...]:
    """A name as pg_dump may print it: bare when it needs no quotes (an operator's always), and double-quoted."""
    if _OPERATOR_NAME.fullmatch(name):
        return (name,)
    quoted = quote_pattern(name)
    return (name, quoted) if _PLAIN_NAME.fullmatch(name) else (quoted,)
