"""The VPS databases a backup writes: the target, ``<target>__staging``, ``<target>__previous``
and, for the moments around a swap, ``<target>__retired``.

The target is never dropped or written in place. A copy is restored into staging, verified,
and only then swapped in, keeping the old copy as ``__previous``; the copy before that is
renamed to ``__retired`` in the same transaction and dropped once the swap has committed.
"""

from __future__ import annotations

import re

from wehub_backup.errors import InvalidTarget

STAGING_SUFFIX = "__staging"
PREVIOUS_SUFFIX = "__previous"
RETIRED_SUFFIX = "__retired"
SUFFIXES = (STAGING_SUFFIX, PREVIOUS_SUFFIX, RETIRED_SUFFIX)
LONGEST_SUFFIX = max(SUFFIXES, key=len)
RESERVED_DATABASES = ("postgres", "template0", "template1")
MAX_TARGET_LENGTH = 63 - len(LONGEST_SUFFIX)
_TARGET_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def staging_name(target: str) -> str:
    return target + STAGING_SUFFIX


def previous_name(target: str) -> str:
    return target + PREVIOUS_SUFFIX


def retired_name(target: str) -> str:
    return target + RETIRED_SUFFIX


def generation_names(target: str) -> tuple[str, str, str, str]:
    """Every database a backup into ``target`` may create, rename or drop."""
    return target, staging_name(target), previous_name(target), retired_name(target)


def validate_target_name(name: str, *, forbidden: dict[str, str] | None = None) -> str:
    """Return ``name`` if it is a safe target, else raise ``InvalidTarget`` with a one-line reason.

    Only lower-case ASCII identifiers are accepted: they need no quoting anywhere (psql,
    pg_hba.conf, connection strings, an operator's shell), and leave room for the suffixes.
    """
    shown = repr(name)
    if not name:
        raise InvalidTarget("invalid target database '': the name is empty")
    if len(name.encode()) > MAX_TARGET_LENGTH:
        raise InvalidTarget(
            f"invalid target database {shown[:40]}...: longer than {MAX_TARGET_LENGTH} bytes "
            f"(it needs room for '{LONGEST_SUFFIX}')"
        )
    if not _TARGET_NAME.fullmatch(name):
        raise InvalidTarget(
            f"invalid target database {shown}: use lower-case letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    if name in RESERVED_DATABASES:
        raise InvalidTarget(f"invalid target database {shown}: {name} is a system database")
    if name.endswith(SUFFIXES):
        raise InvalidTarget(f"invalid target database {shown}: the suffixes {'/'.join(SUFFIXES)} are reserved")
    for other, why in (forbidden or {}).items():
        if name == other:
            raise InvalidTarget(f"invalid target database {shown}: it is {why}")
    return name
