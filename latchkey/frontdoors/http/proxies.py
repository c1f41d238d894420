"""Whose ``X-Forwarded-*`` headers are believed: ``LATCHKEY_TRUSTED_PROXIES``.

Anyone can send ``X-Forwarded-For``; only a proxy the operator named may tell
Latchkey who its client was. The client is the right-most address of
``X-Forwarded-For`` (with the peer appended) that is not a trusted proxy: each
trusted proxy appends the address it received from, so everything to the left
of the first untrusted hop was written by someone we do not believe.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from latchkey.settings import SettingsError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAX_HOPS = 32  # a longer chain is not believed past this many hops


class TrustedProxies:
    def __init__(self, cidrs: str) -> None:
        networks: list[Network] = []
        for part in cidrs.split(","):
            text = part.strip()
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError as exc:
                raise SettingsError(f"trusted_proxies: {text!r} is not a CIDR") from exc
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str | None) -> bool:
        if not self._networks or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)

    def client_address(self, environ: Mapping[str, Any]) -> str | None:
        """The right-most untrusted address of X-Forwarded-For + the peer."""
        peer: str | None = environ.get("REMOTE_ADDR")
        if not self._networks or not self.trusts(peer):
            return peer
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",")][-_MAX_HOPS:]
        client = peer
        for hop in reversed(hops):
            if not hop:
                break
            address = _plain_address(hop)
            if address is None:
                break  # garbage: stop at the last proxy we believe
            client = address
            if not self.trusts(address):
                break
        return client

    def scheme(self, environ: Mapping[str, Any]) -> str:
        """The scheme the client used: the trusted proxy's X-Forwarded-Proto (its last
        value, the one the nearest proxy wrote), else the connection's own."""
        own: str = environ.get("wsgi.url_scheme", "http")
        if not self.trusts(environ.get("REMOTE_ADDR")):
            return own
        forwarded = environ.get("HTTP_X_FORWARDED_PROTO", "")
        last = forwarded.rsplit(",", 1)[-1].strip().lower()
        return last if last in ("http", "https") else own


def _plain_address(hop: str) -> str | None:
    """An IP address as written in X-Forwarded-For (``[v6]:port`` and ``v4:port`` too)."""
    text = hop
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
