"""URLs as messages, logs and Dagster's stored config may show them: never with credentials."""

import re

# To the last '@' before any query: a '/' or '@' in a password hides the real end of userinfo from URL parsers.
_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)?[^?#]*@")
_QUERY_RE = re.compile(r"([?#]).*", re.DOTALL)


def without_credentials(url: str) -> str:
    """``url`` with any userinfo, query string and fragment replaced by ``***``."""
    return _QUERY_RE.sub(r"\1***", _USERINFO_RE.sub(r"\1***@", url))


def has_credentials(url: str) -> bool:
    return without_credentials(url) != url


def scrub(text: str, url: str) -> str:
    """``text`` (an error about ``url``, say) with the userinfo of ``url`` replaced by ``***`` wherever it appears."""
    found = _USERINFO_RE.match(url)
    userinfo = found.group(0)[len(found.group(1) or "") : -1] if found else ""
    return text.replace(userinfo, "***") if userinfo else text
