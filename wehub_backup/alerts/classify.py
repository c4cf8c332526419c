"""What kind of failure an error shows, in one password-free line.

The project's own errors carry their category (``wehub_backup.errors``); the words of pg_dump,
psql, libpq and the servers are classified by the rules here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wehub_backup.errors import FailureCategory, category_of

SUMMARY_MAX_CHARS = 200


@dataclass(frozen=True)
class FailureCause:
    """The classified cause of a failure: a category and one password-free line."""

    category: FailureCategory
    summary: str


_PASSWORD_ASSIGNMENT = re.compile(
    r"""(?ix)
    (?<![/\\.])\b([a-z_]*(?:password|passwd|pwd))   # password=, PGPASSWORD=, smtp_password:, "password":
                                        # (not a file name: /etc/passwd is no assignment)
    (["']?\s*[=:]\s*)
    ('[^']*'|"[^"]*"|[^\s,;&'"}]+)
    """
)
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@")


def scrub_secrets(text: str) -> str:
    """Mask passwords in connection strings, environment assignments and URLs.

    Error texts can echo a conninfo string or a URL with credentials; an alert travels to chat
    and mail boxes, so the value is replaced before anything leaves this module.
    """
    text = _URL_CREDENTIALS.sub(r"\1:***@", text)
    return _PASSWORD_ASSIGNMENT.sub(r"\1\2***", text)


def one_line(text: str, limit: int = SUMMARY_MAX_CHARS) -> str:
    """Collapse whitespace and cut to ``limit`` characters so a summary fits a chat line."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 3].rstrip() + "..."


# ``wehub_backup.preflight.PreflightError:`` before a message: the class is not the operator's business.
EXCEPTION_CLASS_PREFIX = r"(?:[a-z_]\w*\.)+[A-Z]\w*:"
_LINE_PREFIXES = re.compile(
    r"^(?:" + EXCEPTION_CLASS_PREFIX + r"\s*"  # psycopg.OperationalError:
    r"|(?:connection failed|could not execute query|query failed):\s*"
    r"|(?:pg_dump|pg_restore|psql|pg_dumpall|createdb|dropdb)(?::[^:\s]+:\d+)?:\s*"
    r"|(?:error|warning|detail|fatal|ERROR|FATAL|WARNING):\s*)*"
)
_NOISE_LINE = re.compile(
    r"^(?:Traceback|File \"|Stack Trace:|The above exception|During handling|\^|~+|"
    r"LINE \d+:|HINT:|CONTEXT:|DETAIL:|\w+: detail:)"
)
_ERRORISH_LINE = re.compile(r"(?i)error|fatal|failed|denied|exception|could not|cannot")


def _clean_line(line: str) -> str:
    """Drop the exception, program and severity prefixes that repeat on every error line."""
    return _LINE_PREFIXES.sub("", line.strip())


def _line_at(text: str, match: re.Match[str]) -> str:
    """The whole line of ``text`` where ``match`` starts."""
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start : end if end != -1 else len(text)]


def _meaningful_lines(text: str) -> list[str]:
    """Lines that carry a message, without traceback frames, carets and hints."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not _NOISE_LINE.match(line)]


def _last_error_line(text: str) -> str:
    """The last line that reads like an error, else the last line with any message."""
    lines = _meaningful_lines(text)
    errorish = [line for line in lines if _ERRORISH_LINE.search(line)]
    if errorish:
        return errorish[-1]
    return lines[-1] if lines else "no error text was recorded"


def _matched_line(text: str, match: re.Match[str]) -> str:
    """The default summary: the line that matched, without its prefixes."""
    return _clean_line(_line_at(text, match))


def _permission_summary(text: str, match: re.Match[str]) -> str:
    """``permission denied on table storage.migrations``: names the object, schema-qualified
    when pg_dump's ``Query was: LOCK TABLE ...`` detail tells which schema it was."""
    kind, name = match.group("kind"), match.group("name").strip('"')
    locked = re.search(rf"LOCK TABLE (\S+\.\"?{re.escape(name)}\"?) IN", text)
    if kind == "table" and locked:
        name = locked.group(1).replace('"', "")
    return f"permission denied on {kind} {name}"


def _missing_summary(text: str, match: re.Match[str]) -> str:
    """``missing role supabase_admin``: the kind and name of the object that is not there."""
    return f"missing {match.group('kind')} {match.group('name')}"


def _version_summary(text: str, match: re.Match[str]) -> str:
    """Adds pg_dump's ``server version: 17.4; pg_dump version: 15.18`` detail when present."""
    versions = re.search(r"server version: \S+; \w+ version: [^\n]+", text)
    detail = f" ({versions.group(0).strip()})" if versions else ""
    return f"{_matched_line(text, match)}{detail}"


@dataclass(frozen=True)
class _Rule:
    category: FailureCategory
    pattern: re.Pattern[str]
    summarize: Callable[[str, re.Match[str]], str]


def _rule(
    category: FailureCategory,
    pattern: str,
    summarize: Callable[[str, re.Match[str]], str] | None = None,
) -> _Rule:
    """A rule whose summary defaults to the line that matched."""
    return _Rule(category, re.compile(pattern), summarize or _matched_line)


# Order matters: the first rule that matches anywhere in the text wins. The project's own
# refusals and verification come first (they are precise), then root causes that make later
# statements fail (a too-old pg_dump, a full disk, a wrong password) before their symptoms.
_RULES: tuple[_Rule, ...] = (
    _rule(
        FailureCategory.VERSION_MISMATCH,
        r"server version mismatch|unsupported version \([\d.]+\) in file header"
        r"|(?i:no suitable (?:pg_dump|pg_restore|psql))"
        r'|unrecognized configuration parameter "transaction_timeout"|invalid command \\restrict',
        _version_summary,
    ),
    _rule(
        FailureCategory.DISK_FULL,
        r"No space left on device|could not extend file|Disk quota exceeded",
    ),
    _rule(FailureCategory.AUTHENTICATION, r"(?i)password file\b[^\n]*"),
    _rule(
        FailureCategory.AUTHENTICATION,
        r"password authentication failed|no password supplied|SASL authentication failed"
        r"|no pg_hba\.conf entry|(?i:authentication failed)",
    ),
    _rule(FailureCategory.TARGET_IN_USE, r"is being accessed by other users|is being used by prepared transactions"),
    _rule(
        FailureCategory.PERMISSION_DENIED,
        r"permission denied for (?P<kind>table|relation|schema|sequence|function|database|view"
        r"|materialized view|type|language|large object|tablespace|foreign table) (?P<name>\S+)",
        _permission_summary,
    ),
    _rule(
        FailureCategory.PERMISSION_DENIED,
        r"(?i)permission denied|must be owner of|must be a member of role|must be a superuser",
    ),
    _rule(
        FailureCategory.MISSING_OBJECT,
        r'(?P<kind>role|schema|database|extension|function|relation) "?(?P<name>[^"\s]+)"?'
        r" (?:does not exist|is not available)",
        _missing_summary,
    ),
    _rule(FailureCategory.LOCK_CONFLICT, r"canceling statement due to lock timeout|could not obtain lock on relation"),
    _rule(FailureCategory.STATEMENT_TIMEOUT, r"canceling statement due to statement timeout"),
    _rule(
        FailureCategory.NETWORK,
        r"(?i)could not connect|connection refused|timeout expired|timed out"
        r"|could not translate host name|server closed the connection unexpectedly"
        r"|connection to server was lost|network is unreachable|no route to host"
        r"|max clients reached|terminating connection due to administrator command"
        r"|SSL (?:error|SYSCALL)|SSL was required|SSL negotiation|certificate verify failed"
        r"|root certificate file|SSL connection has been closed",
    ),
)


def classify_failure(text: str, error_classes: Sequence[str] = ()) -> FailureCause:
    """Classify a failure from the classes of its error chain and its text.

    One of the project's own errors names its category by its class (``error_classes``, the
    chain's class names from the outermost); otherwise the words of psycopg, pg_dump,
    pg_restore, psql or the OS decide. The summary is a single password-free line (at most
    ``SUMMARY_MAX_CHARS``) that an operator can act on without opening the run: the offending
    object, table or host included.
    """
    ours = next(((name, category) for name in error_classes if (category := category_of([name]))), None)
    if ours is not None:
        name, category = ours
        return FailureCause(category, one_line(scrub_secrets(_clean_line(_message_of(text, name)))))
    for rule in _RULES:
        match = rule.pattern.search(text)
        if match:
            return FailureCause(rule.category, one_line(scrub_secrets(rule.summarize(text, match))))
    summary = _clean_line(_last_error_line(text))
    return FailureCause(FailureCategory.UNKNOWN, one_line(scrub_secrets(summary)))


def _message_of(text: str, error_class: str) -> str:
    """The line where ``error_class`` states its message (``module.Class: message``), else the first line."""
    lines = _meaningful_lines(text)
    named = [line for line in lines if re.match(rf"(?:[\w.]+\.)?{re.escape(error_class)}: ", line)]
    return (named or lines or ["no error text was recorded"])[0]
