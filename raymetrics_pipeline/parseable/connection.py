"""One Parseable server, one dataset on it, one set of credentials: checked once, shared by ingest and SQL."""

from __future__ import annotations

import httpx

from raymetrics_pipeline.common import USER_AGENT
from raymetrics_pipeline.dataset.names import validate_dataset_name


def server_url(url: str) -> str:
    """``PARSEABLE_URL`` checked and without its trailing slash; a clear error when it cannot work.

    Errors reach logs: what may carry credentials is refused before any error repeats the URL.
    """
    if "@" in url:  # userinfo however written: no scheme, or a '/' or '@' in the password, hides it from parsers
        raise ValueError("PARSEABLE_URL must not carry credentials: set PARSEABLE_USERNAME and PARSEABLE_PASSWORD")
    if "?" in url or "#" in url:  # where tokens go, and never part of a server root
        raise ValueError(
            "PARSEABLE_URL must be the server root, without a query string or fragment: write it like "
            "http://localhost:8000 (credentials go in PARSEABLE_USERNAME and PARSEABLE_PASSWORD)"
        )
    if any(char.isspace() for char in url):  # httpx would drop what follows a space (`host: 80` loses its port)
        raise ValueError(f"PARSEABLE_URL={url!r} contains a space: write it like http://localhost:8000")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise ValueError(f"PARSEABLE_URL={url!r} is not a URL ({error}): write it like http://localhost:8000") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"PARSEABLE_URL={url!r} is not an http(s) URL such as http://localhost:8000")
    return str(parsed).rstrip("/")


def parseable_location(url: str, stream: str) -> str:
    """Where the rows are on a Parseable server, for people."""
    return f"{server_url(url)} (dataset {validate_dataset_name(stream)})"


class ParseableSettings:
    """Checked settings for one dataset on one server; opens connections, holds none."""

    def __init__(self, url: str, username: str | None, password: str | None, stream: str = "raymetrics") -> None:
        if not username or not password:
            raise ValueError(
                "PARSEABLE_URL is set but PARSEABLE_USERNAME and PARSEABLE_PASSWORD are not both set: set them to "
                "a Parseable user allowed to ingest and query (Parseable's own defaults are P_USERNAME / P_PASSWORD)."
            )
        self.url = server_url(url)
        self.stream = validate_dataset_name(stream)
        self.auth = httpx.BasicAuth(username, password)

    @property
    def location(self) -> str:
        return parseable_location(self.url, self.stream)

    def connect(self, timeout_seconds: float, transport: httpx.BaseTransport | None = None) -> ParseableConnection:
        return ParseableConnection(self, timeout_seconds, transport)


class ParseableConnection(httpx.Client):
    """An HTTP client for one dataset: paths relative to PARSEABLE_URL, basic auth and our User-Agent on every
    request. Close it when done."""

    def __init__(
        self, settings: ParseableSettings, timeout_seconds: float, transport: httpx.BaseTransport | None = None
    ) -> None:
        super().__init__(
            base_url=settings.url,
            auth=settings.auth,
            timeout=timeout_seconds,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
        )
        self.settings = settings  # not ``stream``: that is httpx.Client's streaming method
