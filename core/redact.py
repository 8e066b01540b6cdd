"""Secrets out of texts that reach a log or a team: one place for what counts as one."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["redact"]

_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@")
_TOKEN = re.compile(r"\bclr_[A-Za-z0-9_-]{8,}")


def redact(text: str, *urls: str) -> str:
    """``text`` without URL passwords, API tokens, and the passwords of ``urls``.

    A password inside a URL in the text and anything shaped like a clr-sweep token
    are masked wherever they appear; the passwords of ``urls`` (a connection the
    caller knows about) also where a driver's error quotes them without their URL.
    """
    for url in urls:
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            text = text.replace(password, "***")
    return _TOKEN.sub("clr_***", _URL_PASSWORD.sub(r"\1***@", text))
