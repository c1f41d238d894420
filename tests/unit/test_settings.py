from __future__ import annotations

from pathlib import Path

import pytest

from latchkey.settings import Settings, SettingsError


def test_defaults_follow_api_contract(tmp_path: Path) -> None:
    settings = Settings.load(environ={})
    assert settings.home == "./var"
    assert settings.bind == "127.0.0.1:8080"
    assert settings.effective_database_url.endswith("/var/latchkey.db")
    assert settings.effective_issuer == "http://127.0.0.1:8080"
    assert settings.token_ttl_seconds == 3600


def test_environment_names_from_api_md(tmp_path: Path) -> None:
    env = {
        "LATCHKEY_HOME": str(tmp_path),
        "LATCHKEY_DATABASE_URL": "postgresql+psycopg://db/latchkey",
        "LATCHKEY_BIND": "0.0.0.0:9000",
        "LATCHKEY_ADMIN_PASSWORD": "from-the-environment",
        "LATCHKEY_WORKERS": "4",
        "LATCHKEY_LOG_JSON": "false",
    }
    settings = Settings.load(environ=env)
    assert settings.home_path == tmp_path.resolve()
    assert settings.effective_database_url == "postgresql+psycopg://db/latchkey"
    assert settings.bind == "0.0.0.0:9000"
    assert settings.admin_password == "from-the-environment"
    assert settings.workers == 4
    assert settings.log_json is False


def test_toml_file_then_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "latchkey.toml"
    config.write_text('bind = "127.0.0.1:7000"\ntoken_ttl_seconds = 600\n')
    env = {"LATCHKEY_CONFIG": str(config), "LATCHKEY_TOKEN_TTL_SECONDS": "900"}
    settings = Settings.load(environ=env)
    assert settings.bind == "127.0.0.1:7000"
    assert settings.token_ttl_seconds == 900


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("workers = 'many'\n", "must be a int"),
        ("no_such_setting = 1\n", "unknown setting"),
        ("bind = \n", "cannot read"),
    ],
)
def test_bad_config_file_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    with pytest.raises(SettingsError, match=message):
        Settings.load(environ={"LATCHKEY_CONFIG": str(config)})


def test_bad_environment_value(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="lockout_failure_attempts"):
        Settings.load(environ={"LATCHKEY_LOCKOUT_FAILURE_ATTEMPTS": "five"})


def test_every_setting_is_documented() -> None:
    described = Settings.describe()
    assert len(described) == len(Settings.names())
    for env, _type, _default, help_text in described:
        assert env.startswith("LATCHKEY_")
        assert help_text
