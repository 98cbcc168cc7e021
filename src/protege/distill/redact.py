"""Redaction before anything leaves the store (DESIGN §8.3).

`mode="secrets"` (always on): API keys and tokens, private keys, credentials in URLs, `key=value` secrets.
`mode="pii"` adds personal data: email addresses, phone numbers, card numbers (Luhn-checked) and IBANs
(mod-97-checked). PII stays by default because many tasks exist to extract exactly that.
Matches become typed placeholders such as ``[REDACTED:api_key]``; counts say what was replaced.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from protege.errors import UserError

Mode = Literal["secrets", "pii"]
MODES = ("secrets", "pii")


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


_TOKEN = r"[A-Za-z0-9_\-]"
KEY_PREFIXES = ("sk-ant-", "sk-proj-", "sk-svcacct-", "sk-admin-")
TOKEN_START = {"generic_sk", "prefixed_key"}  # kinds that match only at a token's start; both become api_key
# (kind, pattern, trigger substrings). Each pattern starts with a literal where it can (Python's `re` scans for a
# literal prefix fast), and runs only when one of its triggers is in the text: most text has no secrets, and a
# row of a 100k-trace dataset must cost microseconds. Specific formats come first, so a key gets its own kind.
SECRET_PATTERNS: list[tuple[str, re.Pattern[str], tuple[str, ...]]] = [
    (
        "private_key",
        re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.DOTALL),
        ("-----BEGIN",),
    ),
    ("api_key", re.compile(rf"sk-ant-{_TOKEN}{{16,}}"), ("sk-ant-",)),  # Anthropic
    ("api_key", re.compile(rf"sk-(?:proj-|svcacct-|admin-){_TOKEN}{{20,}}"), ("sk-",)),  # OpenAI project keys
    ("generic_sk", re.compile(rf"sk-{_TOKEN}{{20,}}"), ("sk-",)),  # OpenAI legacy keys; must start a token
    # a known prefix needs no length: a key clipped in a log line (`sk-ant-api03-abcdef`) is still a key's start
    ("prefixed_key", re.compile(rf"sk-(?:ant|proj|svcacct|admin)-{_TOKEN}+"), KEY_PREFIXES),  # must start a token
    ("api_key", re.compile(r"[srp]k_(?:live|test)_[A-Za-z0-9]{16,}"), ("_live_", "_test_")),  # Stripe
    (
        "api_key",
        re.compile(r"(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}(?![0-9A-Z])"),
        ("AKIA", "ASIA", "AGPA", "AIDA", "AROA"),
    ),  # AWS access key id
    ("api_key", re.compile(rf"AIza{_TOKEN}{{35}}"), ("AIza",)),  # Google
    ("api_key", re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}"), ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),  # GitHub
    ("api_key", re.compile(r"github_pat_[A-Za-z0-9_]{22,}"), ("github_pat_",)),
    ("api_key", re.compile(r"glpat-[A-Za-z0-9_\-]{20,}"), ("glpat-",)),  # GitLab
    ("api_key", re.compile(r"hf_[A-Za-z0-9]{30,}"), ("hf_",)),  # Hugging Face
    ("token", re.compile(r"xox[abposr]-[A-Za-z0-9\-]{10,}"), ("xox",)),  # Slack
    ("token", re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"), ("eyJ",)),  # JWT
    ("token", re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/\-]{16,}=*"), ("bearer", "Bearer", "BEARER")),
    ("credentials", re.compile(r"(?<=://)[^\s/:@\"'<>\[\]]+:[^\s/@\"'<>]+(?=@)"), ("://",)),  # user:pass@host
]
# `api_key = ...`, `"password": "..."`, `--token ...`: the value goes, the name stays for the reader. Matched on
# the lower-cased text (a case-insensitive alternation is ten times slower in `re`).
SECRET_NAMES = (
    r"api[_\- ]?key|apikey|secret(?:[_\-]?key)?|access[_\-]?key(?:[_\-]?id)?|client[_\-]?secret|"
    r"auth[_\-]?token|access[_\-]?token|refresh[_\-]?token|token|password|passwd|pwd|private[_\-]?key"
)
ASSIGNMENT = re.compile(rf"({SECRET_NAMES})(\"?'?\s*(?:=|:|\s)\s*[\"']?)([^\s\"',;<>]{{6,}})")
ASSIGNMENT_TRIGGERS = ("key", "secret", "token", "passw", "pwd")
# One scan each decides whether any of the above can match (the common answer is no).
ANY_SECRET_TRIGGER = re.compile(
    "|".join(sorted({re.escape(t) for _, _, ts in SECRET_PATTERNS for t in ts}, key=len, reverse=True))
)
ANY_NAME_TRIGGER = re.compile("|".join(ASSIGNMENT_TRIGGERS))
_ALL_TRIGGERS_LOWER = tuple(
    sorted({t.lower() for _, _, ts in SECRET_PATTERNS for t in ts} | set(ASSIGNMENT_TRIGGERS) | {"authorization"})
)
SECRET_KEY_NAME = re.compile(rf"(?i)^(?:[a-z0-9]+[_\-])*(?:{SECRET_NAMES})$|^authorization$")
LOOKS_SECRET = re.compile(r"[0-9_\-./+=]|[A-Z].*[a-z]|[a-z].*[A-Z]")
WORD_CHAR = re.compile(r"[A-Za-z0-9_\-]")

EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b")
CARD = re.compile(r"(?<![\w\-])\d(?:[ \-]?\d){12,18}(?![\w\-])")  # not inside a code like 1Z...
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
PHONE = re.compile(r"(?<![\w+\-])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}(?:[ .\-]\d{2,5}){1,4}(?![\w\-])")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def redact(text: str, mode: Mode = "secrets") -> tuple[str, Counter[str]]:
    """Redact `text`; returns the new text and how many of each kind were replaced."""
    _check_mode(mode)
    counts: Counter[str] = Counter()
    return _redact_into(text, mode, counts), counts


def _redact_into(text: str, mode: Mode, counts: Counter[str]) -> str:
    if not text:
        return text
    if ANY_SECRET_TRIGGER.search(text):
        for kind, pattern, triggers in SECRET_PATTERNS:
            if any(t in text for t in triggers):
                if kind in TOKEN_START:  # "sk-" + 20 chars also ends words like "task-..." or "risk-..."
                    text = _sub(pattern, text, "api_key", counts, check=_starts_a_token(text))
                else:
                    text = _sub(pattern, text, kind, counts)
    text = _redact_assignments(text, counts)
    if mode == "pii":
        if "@" in text:
            text = _sub(EMAIL, text, "email", counts)
        text = _sub(IBAN, text, "iban", counts, check=_iban_ok)
        text = _sub(CARD, text, "card", counts, check=_luhn_ok)
        text = _sub(PHONE, text, "phone", counts, check=_phone_ok)
    return text


def may_need_redaction(text: str, mode: Mode = "secrets") -> bool:
    """Cheap test: False means `redact(text, mode)` would change nothing (used to skip whole rows of a dataset).

    Every trigger is looked for in the lower-cased text (a superset of the case-sensitive matches): ~30 substring
    searches beat one regex alternation of them by 2x on ordinary text, where none is found."""
    if mode == "pii":
        return True
    lower = text.lower()
    return any(trigger in lower for trigger in _ALL_TRIGGERS_LOWER)


def redact_json(value: Any, mode: Mode = "secrets", counts: Counter[str] | None = None) -> tuple[Any, Counter[str]]:
    """Redact every string in a JSON value (dicts, lists, scalars); a string under a secret-named key
    (`api_key`, `password`, `authorization`, ...) is replaced whole. Returns a new value; the input is untouched."""
    _check_mode(mode)
    counts = Counter() if counts is None else counts
    return _walk(value, mode, counts), counts


def _walk(value: Any, mode: Mode, counts: Counter[str]) -> Any:
    if isinstance(value, str):
        return _redact_into(value, mode, counts)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if (
                isinstance(item, str)
                and item
                and isinstance(key, str)
                and SECRET_KEY_NAME.match(key)
                and not item.startswith("[REDACTED:")
            ):
                counts["secret"] += 1
                out[key] = placeholder("secret")
            else:
                out[key] = _walk(item, mode, counts)
        return out
    if isinstance(value, list):
        return [_walk(item, mode, counts) for item in value]
    return value


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UserError(f"redact mode {mode!r} is not one of {MODES}; use Policy(redact='secrets') or 'pii'")


def _sub(
    pattern: re.Pattern[str],
    text: str,
    kind: str,
    counts: Counter[str],
    check: Callable[[re.Match[str]], bool] | None = None,
) -> str:
    def repl(m: re.Match[str]) -> str:
        if check is not None and not check(m):
            return m.group(0)
        counts[kind] += 1
        return placeholder(kind)

    return pattern.sub(repl, text)


def _starts_a_token(text: str) -> Callable[[re.Match[str]], bool]:
    """A key must start a token: `sk-...` yes, `task-...` (inside a word) no."""
    return lambda m: m.start() == 0 or not WORD_CHAR.match(text, m.start() - 1)


def _redact_assignments(text: str, counts: Counter[str]) -> str:
    lower = text.lower()
    if not ANY_NAME_TRIGGER.search(lower):
        return text
    if len(lower) != len(text):  # a few characters change length when lower-cased: match case-insensitively
        return re.compile(ASSIGNMENT.pattern, re.IGNORECASE).sub(lambda m: _assignment(m, counts), text)
    pieces, last = [], 0
    for m in ASSIGNMENT.finditer(lower):
        start, end = m.start(3), m.end(3)
        value = text[start:end]
        if value.startswith("[REDACTED:") or not LOOKS_SECRET.search(value):
            continue  # already redacted, or a plain word ("password reset", "token expired")
        counts["secret"] += 1
        pieces += [text[last:start], placeholder("secret")]
        last = end
    return "".join(pieces) + text[last:] if pieces else text


def _assignment(m: re.Match[str], counts: Counter[str]) -> str:
    value = m.group(3)
    if value.startswith("[REDACTED:") or not LOOKS_SECRET.search(value):
        return m.group(0)
    counts["secret"] += 1
    return m.group(1) + m.group(2) + placeholder("secret")


def _luhn_ok(m: re.Match[str]) -> bool:
    digits = [int(c) for c in m.group(0) if c.isdigit()]
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(m: re.Match[str]) -> bool:
    s = m.group(0).replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _phone_ok(m: re.Match[str]) -> bool:
    """9-15 digits and not a date or a plain long number (order ids, amounts)."""
    candidate = m.group(0)
    digits = sum(c.isdigit() for c in candidate)
    if not 9 <= digits <= 15 or ISO_DATE.match(candidate):
        return False
    return candidate.startswith(("+", "(")) or any(c in candidate for c in " .-")


__all__ = ["MODES", "Mode", "may_need_redaction", "placeholder", "redact", "redact_json"]
