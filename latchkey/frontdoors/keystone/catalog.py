"""Keystone v3 catalog: the token catalog in Keystone's shape."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from latchkey.frontdoors.keystone.common import base_url, stable_id
from latchkey.web.requests import services

# -- catalog ----------------------------------------------------------------------------


def token_catalog() -> list[dict[str, Any]]:
    """The service catalog in Keystone's shape, always with an ``identity`` entry:
    built once per catalog view (refreshed every few seconds, not a query per
    token) and base URL, not once per validation; never modified once built."""
    identity_url = base_url() + "/v3"
    view = services().catalog.view()
    built = _BUILT_CATALOG.get(identity_url)
    if built is None or built[0] is not view:
        if len(_BUILT_CATALOG) >= 16:  # one or two base URLs in practice (Host header)
            _BUILT_CATALOG.clear()
        built = _BUILT_CATALOG[identity_url] = (view, _build_catalog(view.services, identity_url))
    return built[1]


# identity URL -> (the catalog view it was built from, the catalog in Keystone's shape)
_BUILT_CATALOG: dict[str, tuple[Any, list[dict[str, Any]]]] = {}


def _build_catalog(
    catalog_services: Iterable[tuple[str, str, str, tuple[dict[str, Any], ...]]], identity_url: str
) -> list[dict[str, Any]]:
    catalog = []
    seen_identity = False
    for service_id, service_type, service_name, service_endpoints in catalog_services:
        endpoints = [
            {
                "id": stable_id(service_id, e.get("interface", ""), e.get("url", "")),
                "interface": e.get("interface", "public"),
                "region": e.get("region"),
                "region_id": e.get("region"),
                "url": e.get("url", ""),
            }
            for e in service_endpoints
        ]
        if service_type == "identity":
            seen_identity = True
            if not endpoints:
                endpoints = _identity_endpoints(service_id, identity_url)
        # Services without endpoints are listed too, as Keystone lists them:
        # keystonemiddleware refuses every access-ruled token unless its own
        # service_type is in the token's catalog.
        catalog.append(
            {"id": service_id, "type": service_type, "name": service_name, "endpoints": endpoints}
        )
    if not seen_identity:
        catalog.insert(
            0,
            {
                "id": "identity",
                "type": "identity",
                "name": "keystone",
                "endpoints": _identity_endpoints("identity", identity_url),
            },
        )
    return catalog


def _identity_endpoints(service_id: str, url: str) -> list[dict[str, Any]]:
    return [
        {
            "id": stable_id(service_id, interface, url),
            "interface": interface,
            "region": None,
            "region_id": None,
            "url": url,
        }
        for interface in ("public", "internal", "admin")
    ]
