"""Secrets stay out of messages, logs, headers and the catalog: the one place that says what looks
like a credential, in URLs, in free text and in FITS cards."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

MASK = "***"
# A query parameter or a key=value pair whose name holds one of these carries a secret.
SECRET_NAME = re.compile(r"pass(word|wd)?|pwd|secret|token|key|credential|auth|signature", re.I)
# FITS keywords that hold credentials, and credential-like values in any card (COMMENT and HISTORY too).
DENIED_KEYWORD = re.compile(
    r"PASS(W|WD|WORD)?$|PASSW|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIV_?KEY|CREDENT", re.I
)
DENIED_VALUE = re.compile(
    r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|\b(password|passwd|secret|token)\s*[=:]", re.I
)
_USERINFO = re.compile(r"//[^/@\s]*:[^/@\s]*@")
_PAIR = re.compile(r"(?P<name>[A-Za-z_][\w.-]*)(?P<sep>\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;,)]+)")


def masked_url(url: str) -> str:
    """``url`` with the password of its user part and every query parameter named like a secret
    (``password``, ``secret``, ``token``, ``key``, ...) masked; the rest as it was written."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    shown = url
    if "@" in parts.netloc:
        user, _, host = parts.netloc.rpartition("@")
        name = user.split(":", 1)[0]
        shown = shown.replace(parts.netloc, f"{name}:{MASK}@{host}" if ":" in user else parts.netloc, 1)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(SECRET_NAME.search(name) for name, _ in pairs):
            query = urlencode([(k, MASK if SECRET_NAME.search(k) else v) for k, v in pairs], safe="*")
            shown = shown.replace("?" + parts.query, "?" + query, 1)
    return shown


def without_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it and every ``name=value`` whose name
    looks like a secret masked (drivers and brokers quote the URL or connection string they got)."""
    text = _USERINFO.sub(f"//{MASK}@", text)
    return _PAIR.sub(
        lambda m: f"{m['name']}{m['sep']}{MASK}" if SECRET_NAME.search(m["name"]) else m.group(0), text
    )


def looks_secret(keyword: str, value: object) -> bool:
    """Whether a FITS card holds a credential: its keyword is on the deny-list, or its value looks
    like one."""
    return bool(DENIED_KEYWORD.search(keyword)) or (
        isinstance(value, str) and bool(DENIED_VALUE.search(value))
    )
