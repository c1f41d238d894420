"""Every Latchkey setting, declared once: name, type, default and help.

Values come, in increasing precedence, from the defaults below, an optional
TOML file named by ``LATCHKEY_CONFIG`` (keys are the setting names, lower
case, e.g. ``database_url = "..."``) and ``LATCHKEY_<NAME>`` environment
variables. ``create_app`` takes a ``Settings`` object so tests can build an
isolated application without touching the environment.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "LATCHKEY_"


class SettingsError(ValueError):
    """A setting has a value of the wrong type or an unknown name."""


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    home: str = _setting(
        "./var", "Instance folder: the SQLite database, the master key and other generated files."
    )
    database_url: str = _setting(
        "", "SQLAlchemy URL of the database; empty means SQLite at <home>/latchkey.db."
    )
    bind: str = _setting("127.0.0.1:8080", "Address `latchkey serve` listens on (host:port).")
    server: str = _setting(
        "gunicorn",
        "HTTP server `latchkey serve` runs: `gunicorn` (sync or gthread workers) or `granian`"
        " (a Rust HTTP server, WSGI interface; install `latchkey[granian]`).",
    )
    workers: int = _setting(2, "Number of worker processes for `latchkey serve`.")
    threads: int = _setting(
        1,
        "Threads per worker for `latchkey serve`; gunicorn: above 1, gthread workers, which keep"
        " client connections alive between requests; granian: the threads that run the app"
        " (its blocking threads; connections are kept alive whatever the number).",
    )
    admin_password: str = _setting(
        "", "Password `latchkey bootstrap` gives the `admin` user; empty means generate one."
    )
    issuer: str = _setting(
        "", "Token issuer (`iss`): the public base URL of this service; empty means http://<bind>."
    )
    token_audience: str = _setting("latchkey", "Audience (`aud`) placed in issued tokens.")
    region: str = _setting(
        "RegionOne",
        "Region of Latchkey's own identity endpoints in Keystone's catalog (`region_name` in a"
        " clouds.yaml); made at bootstrap if missing.",
    )
    keystone_every_admin_is_cloud_admin: bool = _setting(
        False,
        "Keystone's legacy default: a token scoped to ANY project whose user holds `admin` there"
        " acts as the cloud's admin (Keystone without [resource] admin_project_name). Off:"
        " only admins of the admin project or of the system do. For migrations only.",
    )
    token_ttl_seconds: int = _setting(3600, "Lifetime of issued tokens in seconds.")
    verified_token_cache_size: int = _setting(
        5000,
        "Tokens each worker keeps verified (signature and claims; revocation is checked on"
        " every request), admitted at their second use; 0 verifies every time.",
    )
    key_refresh_seconds: int = _setting(
        30, "How often a worker reloads the signing key ring from the database."
    )
    password_min_length: int = _setting(12, "Minimum length of a sql user's password.")
    password_hash_time_cost: int = _setting(3, "argon2id time cost (iterations).")
    password_hash_memory_kib: int = _setting(65536, "argon2id memory cost in KiB.")
    lockout_failure_attempts: int = _setting(
        5, "Consecutive failed password logins that lock an account (0 disables lockout)."
    )
    lockout_duration_minutes: int = _setting(15, "How long a locked account stays locked.")
    max_request_bytes: int = _setting(1_048_576, "Largest accepted request body in bytes.")
    policy_boundary_file: str = _setting(
        "",
        "The operator's boundary (Polar); empty means the shipped default. Checked when "
        "`latchkey serve` starts and by `latchkey policy boundary load`; a broken file is "
        "refused and the boundary in force stays.",
    )
    policy_timeout_ms: int = _setting(
        1000,
        "Longest a Polar query may run (POLAR_TIMEOUT_MS), in milliseconds; a decision "
        "takes well under one, so this only bounds runaway operator Polar (oso's default is "
        "30,000). It is wall-clock time: too small and a busy machine denies at random.",
    )
    decision_record_percent: int = _setting(
        10,
        "Share of authorization decisions recorded (0-100) for policy simulation; "
        "attributes the catalog marks sensitive are never recorded.",
    )
    ldap_recheck_seconds: int = _setting(
        60,
        "How long the directory's word on an LDAP user (exists, enabled, groups) is trusted "
        "before a credential use asks it again.",
    )
    ldap_outage_grace_seconds: int = _setting(
        900,
        "While an LDAP directory is down, credentials of its users keep working on the "
        "last known state for this long after the last successful check (0: never).",
    )
    secret_store: str = _setting("local", "Where Latchkey keeps secrets: local | vault | barbican.")
    vault_addr: str = _setting(
        "", "Vault/OpenBao address for secret_store=vault; empty means the VAULT_ADDR variable."
    )
    vault_token: str = _setting(
        "", "Vault/OpenBao token; empty means the VAULT_TOKEN variable (or AppRole below)."
    )
    vault_role_id: str = _setting("", "AppRole role_id; with vault_secret_id, log in by AppRole.")
    vault_secret_id: str = _setting("", "AppRole secret_id (used with vault_role_id).")
    vault_approle_mount: str = _setting("approle", "Mount point of the AppRole auth method.")
    vault_mount: str = _setting("secret", "Mount point of the KV version 2 secrets engine.")
    vault_prefix: str = _setting(
        "latchkey", "Path prefix inside the KV mount: <prefix>/<project_id>/<secret_id>."
    )
    vault_timeout_seconds: int = _setting(5, "Timeout of each request to Vault/OpenBao.")
    barbican_url: str = _setting(
        "", "Barbican endpoint for secret_store=barbican, e.g. https://barbican.example:9311."
    )
    barbican_auth: str = _setting(
        "keystone",
        "How Latchkey authenticates to Barbican: keystone (a token from an application "
        "credential; needs keystoneauth1) | trusted-headers (X-Project-Id and friends, for a "
        "Barbican without Keystone behind a trusted proxy).",
    )
    barbican_keystone_url: str = _setting(
        "", "Keystone v3 URL for barbican_auth=keystone, e.g. https://keystone.example/v3."
    )
    barbican_application_credential_id: str = _setting(
        "", "Keystone application credential id (barbican_auth=keystone)."
    )
    barbican_application_credential_secret: str = _setting(
        "", "Keystone application credential secret (barbican_auth=keystone)."
    )
    barbican_project_id: str = _setting(
        "", "X-Project-Id sent with barbican_auth=trusted-headers: the project holding the secrets."
    )
    barbican_user_id: str = _setting("latchkey", "X-User-Id sent with trusted-headers.")
    barbican_roles: str = _setting("member,reader", "X-Roles sent with trusted-headers.")
    barbican_timeout_seconds: int = _setting(5, "Timeout of each request to Barbican.")
    log_level: str = _setting("INFO", "Log level of the JSON logs.")
    log_json: bool = _setting(True, "Write logs as JSON lines (false: plain text).")
    # -- issue 13, classes 6, 7 and 10: authentication under attack, the audit trail of
    # attacks, browser-facing defaults (docs/operators.md "Under attack").
    trusted_proxies: str = _setting(
        "",
        "Comma-separated CIDRs of the reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed (the right-most address not in them is the client); "
        "empty believes nobody. Used by throttling, credentials' allowed CIDRs, the audit "
        "trail and HSTS.",
    )
    ratelimit_enabled: bool = _setting(
        True, "Throttle failed password and secret checks (false: no throttling at all)."
    )
    ratelimit_storage_url: str = _setting(
        "memory://",
        "Where throttling counts live: memory:// (each worker process its own) or "
        "redis://host:6379/0 (shared by every worker and node; needs the `redis` extra).",
    )
    ratelimit_auth_per_source: str = _setting(
        "10 per minute; 100 per hour",
        "Failed authentications (passwords, credential secrets, OAuth client secrets) one "
        "source address may make, over every door; past it a 429 before any hash is computed.",
    )
    ratelimit_auth_per_account: str = _setting(
        "10 per minute; 100 per hour",
        "Failed authentications against one account (user or credential, as named in the "
        "request, known or not) from all sources together; past it a 429 for that account.",
    )
    ratelimit_known_source_days: int = _setting(
        30,
        "A source address that logged into an account is exempt from that account's "
        "per-account limit for this many days (its own failures still count per source).",
    )
    audit_attack_window_seconds: int = _setting(
        60,
        "Denials and invalid tokens are audited at most once per (kind, source, subject) "
        "in this window per worker; the next event counts the ones left out.",
    )
    audit_attack_max_events: int = _setting(
        100,
        "At most this many denial and invalid-token events per window per worker, whatever "
        "their sources; the next one written counts those dropped.",
    )
    hsts_max_age_seconds: int = _setting(
        31536000,
        "Strict-Transport-Security max-age sent on answers served over TLS (https, or "
        "X-Forwarded-Proto: https from a trusted proxy); 0 sends none.",
    )
    metrics_token: str = _setting(
        "",
        "When set, /metrics answers only to `Authorization: Bearer <this value>` "
        "(compared in constant time); empty leaves it open (docs/operators.md).",
    )
    # -- issue 13, class 1: a tenant must not be able to starve the service -------------
    # What a tenant policy document may hold (checked when a project's or a domain's
    # document is put, validated or activated; docs/policy.md "Limits").
    policy_max_rules: int = _setting(1000, "Most rules in one policy document (project or domain).")
    policy_max_actions: int = _setting(50, "Most actions (or action globs) in one rule.")
    policy_max_conditions: int = _setting(20, "Most resource conditions in one rule.")
    policy_max_list: int = _setting(
        1000, "Most values in one list of a rule (an `in` value, a principals list)."
    )
    policy_max_string: int = _setting(
        1024, "Longest string in a rule (a condition value, a description), in characters."
    )
    policy_max_glob_length: int = _setting(128, "Longest `glob` condition pattern, in characters.")
    policy_max_glob_stars: int = _setting(5, "Most `*` in one glob (a condition's or an action's).")
    policy_max_glob_wildcards: int = _setting(
        16, "Most single-character wildcards (`?`) in one `glob` pattern."
    )
    policy_max_document_bytes: int = _setting(
        524_288, "Largest policy document, as compact JSON, in bytes."
    )
    policy_max_principals: int = _setting(
        1000,
        "Most distinct principals (users, groups, roles, kinds, credentials) one document "
        "names: each is looked up when the document is put.",
    )
    policy_max_cost: int = _setting(
        50_000,
        "Most evaluation units in one document (a rule 1, a condition 1, `in` 10, a glob 40 + 3 "
        'per character of its pattern; docs/policy.md "Limits"): what one decision may cost.',
    )
    # What a decision request may send, and what it may cost.
    decision_max_attributes: int = _setting(
        100, "Most resource attributes in one check (at most 100 whatever this says)."
    )
    decision_max_attribute_length: int = _setting(
        1024, "Longest string a resource attribute (or an item of a list attribute) may hold."
    )
    decision_max_attribute_items: int = _setting(
        100, "Most items in a list-valued resource attribute."
    )
    decision_max_cost: int = _setting(
        200_000,
        "Most evaluation units one /v1/authorize/batch, /actions or policy simulation may "
        "need: the sum, over its checks, of the units of the rules whose actions match.",
    )
    decision_budget_ms: int = _setting(
        500,
        "Wall-clock budget of one decision (tenant rules included), in milliseconds; past it "
        "the decision is a denial with decided_by `budget` (fail closed).",
    )
    decision_batch_budget_ms: int = _setting(
        3000,
        "Wall-clock budget of a whole batch, /actions call or simulation, in milliseconds; "
        "checks not decided in time are denials with decided_by `budget`.",
    )
    # -- issue 15, point 5: sizing (docs/operations.md "Sizing") ----------------------
    db_pool_size: int = _setting(
        5,
        "Connections each worker keeps open to PostgreSQL (SQLAlchemy's pool_size); a node "
        "opens up to workers x (pool + overflow) + one listener per worker. SQLite ignores it.",
    )
    db_max_overflow: int = _setting(
        10,
        "Connections a worker may open beyond db_pool_size under a burst, closed when "
        "returned (SQLAlchemy's max_overflow). SQLite ignores it.",
    )
    db_pool_timeout_seconds: int = _setting(
        30,
        "How long a request waits for a free pooled connection before it fails. SQLite ignores it.",
    )

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any, str]]:
        """(environment variable, type, default, help) of every setting."""
        return [
            (ENV_PREFIX + f.name.upper(), _type_name(f.type), f.default, f.metadata["help"])
            for f in fields(cls)
        ]

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from defaults, the TOML file, the environment, then overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        config_file = environ.get(ENV_PREFIX + "CONFIG")
        if config_file:
            values.update(_read_toml(Path(config_file)))
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = raw
        # The standard Vault client variables, when Latchkey's own are not set.
        for name, standard in (("vault_addr", "VAULT_ADDR"), ("vault_token", "VAULT_TOKEN")):
            if name not in values and environ.get(standard):
                values[name] = environ[standard]
        values.update(overrides)
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        known = {f.name: f for f in fields(cls)}
        converted: dict[str, Any] = {}
        for name, raw in values.items():
            if name not in known:
                raise SettingsError(f"unknown setting {name!r}")
            converted[name] = _convert(name, _type_name(known[name].type), raw)
        return cls(**converted)

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()

    @property
    def effective_issuer(self) -> str:
        return (self.issuer or f"http://{self.bind}").rstrip("/")

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home_path / 'latchkey.db'}"


def _type_name(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else annotation.__name__


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read LATCHKEY_CONFIG file {path}: {exc}") from exc
    # Accept both a flat file and one with a [latchkey] table.
    table = data.get("latchkey", data)
    return {str(key).lower(): value for key, value in table.items()}


def _convert(name: str, type_name: str, raw: Any) -> Any:
    try:
        if type_name == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if type_name == "int":
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        return str(raw)
    except ValueError as exc:
        raise SettingsError(f"setting {name!r} must be a {type_name}, got {raw!r}") from exc
