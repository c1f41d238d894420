"""What a view reads of the application and request it runs in: the services built
by ``latchkey.wiring``, and the client's address."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app, g, request

from latchkey.frontdoors.http.proxies import TrustedProxies

if TYPE_CHECKING:
    from latchkey.wiring import Services

PROXIES_EXTENSION = "latchkey_trusted_proxies"


def services() -> Services:
    services: Services = current_app.extensions["latchkey"]
    return services


def client_address() -> str | None:
    """The client's address: the peer, or what a trusted proxy says it is
    (``LATCHKEY_TRUSTED_PROXIES``, latchkey/frontdoors/http/proxies.py). Throttling, credentials'
    allowed CIDRs and the audit trail all use this one."""
    address: str | None = g.get("client_address")
    if address is None:
        proxies: TrustedProxies | None = current_app.extensions.get(PROXIES_EXTENSION)
        environ = request.environ
        address = proxies.client_address(environ) if proxies else environ.get("REMOTE_ADDR")
        g.client_address = address
    return address
