"""Keystone v3 catalog: the token catalog in Keystone's shape."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from latchkey.frontdoors.keystone.common import base_url, stable_id
from latchkey.policy.catalog import CatalogEntry
from latchkey.web.requests import services

# -- catalog ----------------------------------------------------------------------------


def token_catalog() -> list[dict[str, Any]]:
    """The service catalog in Keystone's shape, always with an ``identity`` entry:
    built once per catalog view (refreshed every few seconds, not a query per
    token) and base URL, not once per validation; never modified once built.
    Disabled services and endpoints are left out, as Keystone leaves them out."""
    identity_url = base_url() + "/v3"
    catalog = services().catalog
    view = catalog.view()
    built = _BUILT_CATALOG.get(identity_url)
    if built is None or built[0] is not view:
        if len(_BUILT_CATALOG) >= 16:  # one or two base URLs in practice (Host header)
            _BUILT_CATALOG.clear()
        built = _BUILT_CATALOG[identity_url] = (
            view,
            _build_catalog(view.services, identity_url, catalog.region),
        )
    return built[1]


# identity URL -> (the catalog view it was built from, the catalog in Keystone's shape)
_BUILT_CATALOG: dict[str, tuple[Any, list[dict[str, Any]]]] = {}


def _build_catalog(
    entries: Iterable[CatalogEntry], identity_url: str, region: str
) -> list[dict[str, Any]]:
    catalog = []
    seen_identity = False
    for entry in entries:
        endpoints = [
            {
                "id": endpoint_id,
                "interface": interface,
                "region": region_id,
                "region_id": region_id,
                "url": url,
            }
            for endpoint_id, interface, url, region_id in entry.endpoints
        ]
        if entry.type == "identity":
            seen_identity = True
            if entry.builtin and not endpoints:
                endpoints = identity_endpoints(entry.id, identity_url, region)
        # Services without endpoints are listed too, as Keystone lists them:
        # keystonemiddleware refuses every access-ruled token unless its own
        # service_type is in the token's catalog.
        catalog.append(
            {"id": entry.id, "type": entry.type, "name": entry.name, "endpoints": endpoints}
        )
    if not seen_identity:
        catalog.insert(
            0,
            {
                "id": "identity",
                "type": "identity",
                "name": "keystone",
                "endpoints": identity_endpoints("identity", identity_url, region),
            },
        )
    return catalog


def identity_endpoints(service_id: str, url: str, region: str) -> list[dict[str, Any]]:
    """Latchkey's own identity endpoints while none are stored: public, internal and
    admin at its base URL, in its region (LATCHKEY_REGION), with ids stable per URL."""
    return [
        {
            "id": stable_id(service_id, interface, url),
            "interface": interface,
            "region": region,
            "region_id": region,
            "url": url,
        }
        for interface in ("public", "internal", "admin")
    ]
