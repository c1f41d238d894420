"""The few HTTP calls the middleware makes to Latchkey, with urllib and a timeout."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class LatchkeyUnreachable(Exception):
    """Latchkey did not answer, or answered something other than the expected JSON."""


class LatchkeyHttp:
    def __init__(self, base_url: str, timeout: float) -> None:
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"latchkey_url must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str, token: str | None = None, **query: Any) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        return self._send(urllib.request.Request(url, headers=_headers(token)))  # noqa: S310

    def post(self, path: str, body: Any, token: str | None = None) -> Any:
        headers = _headers(token)
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
        url = self.base_url + path
        return self._send(
            urllib.request.Request(url, data=data, headers=headers, method="POST")  # noqa: S310
        )

    def _send(self, request: urllib.request.Request) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - scheme checked
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise LatchkeyUnreachable(f"{request.full_url}: HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused, bad JSON
            raise LatchkeyUnreachable(f"{request.full_url}: {exc}") from exc


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers
