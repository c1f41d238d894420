"""Keystone's OS-OAUTH1 consumers (the cloud admins'): CRUD only; Latchkey issues no
OAuth 1.0a request or access tokens (docs/decisions.md)."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from latchkey.credentials.keystone import (
    CONSUMER_CREATE,
    CONSUMER_DELETE,
    CONSUMER_GET,
    CONSUMER_LIST,
    CONSUMER_UPDATE,
)
from latchkey.credentials.records import OAuth1ConsumerRecord
from latchkey.errors import InvalidRequest
from latchkey.frontdoors.http.requests import services
from latchkey.frontdoors.keystone.common import (
    NO_STORE,
    authenticated,
    base_url,
    blp,
    json_body,
    obj,
)

POLICY_NAMES: dict[str, str] = {
    "identity:create_consumer": CONSUMER_CREATE,
    "identity:list_consumers": CONSUMER_LIST,
    "identity:get_consumer": CONSUMER_GET,
    "identity:update_consumer": CONSUMER_UPDATE,
    "identity:delete_consumer": CONSUMER_DELETE,
}
CONSUMERS = "/v3/OS-OAUTH1/consumers"


def consumer_body(consumer: OAuth1ConsumerRecord) -> dict[str, Any]:
    return {
        "id": consumer.id,
        "description": consumer.description,
        "links": {"self": f"{base_url()}{CONSUMERS}/{consumer.id}"},
    }


def _consumer_data() -> dict[str, Any]:
    body = json_body()
    data = obj(body.get("consumer", {}), "consumer")
    unknown = set(data) - {"description", "id"}
    if unknown:
        raise InvalidRequest("unknown attributes: " + ", ".join(sorted(unknown)))
    return data


@blp.route(CONSUMERS, methods=["POST"])
def create_consumer() -> Any:
    ctx = authenticated()
    data = _consumer_data()
    if "id" in data:
        raise InvalidRequest("Latchkey generates consumer ids; omit 'id'")
    created = services().oauth1_consumers.create(ctx, data.get("description"))
    body = consumer_body(created.consumer)
    body["secret"] = created.secret
    response = jsonify({"consumer": body})
    response.status_code = 201
    response.headers.update(NO_STORE)
    return response


@blp.route(CONSUMERS, methods=["GET"])
def list_consumers() -> Any:
    found = services().oauth1_consumers.list(authenticated())
    return jsonify(
        {
            "consumers": [consumer_body(c) for c in found],
            "links": {"self": base_url() + CONSUMERS, "previous": None, "next": None},
        }
    )


@blp.route(f"{CONSUMERS}/<consumer_id>", methods=["GET"])
def get_consumer(consumer_id: str) -> Any:
    consumer = services().oauth1_consumers.get(authenticated(), consumer_id)
    return jsonify({"consumer": consumer_body(consumer)})


@blp.route(f"{CONSUMERS}/<consumer_id>", methods=["PATCH"])
def update_consumer(consumer_id: str) -> Any:
    ctx = authenticated()
    data = _consumer_data()
    if data.get("id", consumer_id) != consumer_id:
        raise InvalidRequest("a consumer's id cannot be changed")
    consumer = services().oauth1_consumers.update(ctx, consumer_id, data.get("description"))
    return jsonify({"consumer": consumer_body(consumer)})


@blp.route(f"{CONSUMERS}/<consumer_id>", methods=["DELETE"])
def delete_consumer(consumer_id: str) -> Any:
    services().oauth1_consumers.delete(authenticated(), consumer_id)
    return Response(status=204)
