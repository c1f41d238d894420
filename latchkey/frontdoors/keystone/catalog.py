"""Keystone v3 catalog: the token catalog in Keystone's shape."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from latchkey.frontdoors.http.requests import services
from latchkey.frontdoors.keystone.common import base_url, stable_id
from latchkey.policy.catalog import CatalogEntry

# -- catalog ----------------------------------------------------------------------------


def token_catalog(
    project_id: str | None = None, user_id: str | None = None, base: str | None = None
) -> list[dict[str, Any]]:
    """The service catalog in Keystone's shape, always with an ``identity`` entry:
    built once per catalog view (refreshed every few seconds, not a query per
    token) and base URL, not once per validation; never modified once built.
    Disabled services and endpoints are left out, as Keystone leaves them out.

    Keystone's URL templates (``$(project_id)s``, ``%(tenant_id)s``, ``$(user_id)s``)
    are filled in for the token's project and user when the caller names them (and
    an endpoint whose template needs what the token lacks is left out, as Keystone
    does); a catalog without templates is the cached list itself."""
    identity_url = (base or base_url()) + "/v3"
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
    if (project_id is None and user_id is None) or not _has_templates(built[1]):
        return built[1]
    return substitute(built[1], project_id, user_id)


def _has_templates(catalog: list[dict[str, Any]]) -> bool:
    return any("%(" in e["url"] or "$(" in e["url"] for s in catalog for e in s["endpoints"])


def substitute(
    catalog: list[dict[str, Any]], project_id: str | None, user_id: str | None
) -> list[dict[str, Any]]:
    """A copy of the catalog with its URL templates filled in (Keystone's
    ``format_url``): an endpoint that needs a value the token does not carry, or
    names one Latchkey does not know, is left out."""
    values = {
        key: value
        for key, value in (
            ("project_id", project_id),
            ("tenant_id", project_id),
            ("user_id", user_id),
        )
        if value is not None
    }
    out = []
    for service in catalog:
        endpoints = []
        for endpoint in service["endpoints"]:
            url = endpoint["url"]
            if "%(" in url or "$(" in url:
                try:
                    url = url.replace("$(", "%(") % values
                except (KeyError, TypeError, ValueError):
                    continue
            endpoints.append({**endpoint, "url": url})
        out.append({**service, "endpoints": endpoints})
    return out


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
