"""The revocation feed's subjects that Latchkey and a relying service compute alike.

A ``user_project`` event revokes one user's tokens scoped to one project (issued at
or before its ``issued_before``): what removing that user's role on that project
can change, as Keystone's ``revoke_by_grant``. Its subject must fit the feed's
64 characters whatever the ids' length (up to 64 each), so it is a digest: the
SHA-256, in lowercase hex, of the user id, a NUL byte and the project id.

A token is matched by its ``sub`` with its ``project.id``; a trust's token also by
its ``trust.trustor_user_id`` and ``trust.trustee_user_id`` with its project.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

USER_PROJECT = "user_project"


def user_project_subject(user_id: str, project_id: str) -> str:
    """The subject of the ``user_project`` event for this user and project."""
    return hashlib.sha256(f"{user_id}\0{project_id}".encode()).hexdigest()


def user_project_subjects(claims: Mapping[str, Any]) -> list[str]:
    """The ``user_project`` subjects a token's claims answer to (none when unscoped,
    or scoped to a domain or the system)."""
    project_id = (claims.get("project") or {}).get("id")
    if not project_id:
        return []
    users = [claims.get("sub")]
    trust = claims.get("trust") or {}
    if trust:
        users += [trust.get("trustor_user_id"), trust.get("trustee_user_id")]
    return [
        user_project_subject(str(user), str(project_id)) for user in dict.fromkeys(users) if user
    ]
