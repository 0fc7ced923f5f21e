from __future__ import annotations

from pathlib import Path

import pytest

from shredline.keystore.ingest import Kem
from shredline.streams.errors import ConfigError
from shredline.streams.settings import Secret, Settings, load_settings


def test_defaults_without_environment() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.data_dir == Path(".shredline")
    assert settings.jar_cache == Path(".shredline/cache")
    assert settings.bootstrap is None and settings.topic_prefix == ""


def test_environment_overrides_toml(tmp_path: Path) -> None:
    toml = tmp_path / "shredline.toml"
    toml.write_text('topic_prefix = "staging"\ndata_dir = "/srv/a"\nreplication_factor = 3\n')
    settings = load_settings({"SHREDLINE_CONFIG": str(toml), "SHREDLINE_DATA_DIR": "/srv/b"})
    assert settings.topic_prefix == "staging"
    assert settings.data_dir == Path("/srv/b")
    assert settings.replication_factor == 3


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"SHREDLINE_TOPIC_PREFIX": "bad prefix!"}, "topic_prefix"),
        ({"SHREDLINE_TOPIC_PREFIX": "staging\n"}, "topic_prefix"),
        ({"SHREDLINE_BOOTSTRAP": "no-port"}, "bootstrap"),
        ({"SHREDLINE_REPLICATION_FACTOR": "three"}, "replication_factor"),
        ({"SHREDLINE_REPLICATION_FACTOR": "0"}, "replication_factor"),
        ({"SHREDLINE_TLS_CERT": "/c.pem"}, "tls_cert"),
        ({"SHREDLINE_INGEST_KEM": "rsa"}, "ingest_kem"),
        ({"SHREDLINE_ALLOW_PLAINTEXT_INGEST": "maybe"}, "allow_plaintext_ingest"),
    ],
)
def test_bad_values_name_the_field(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert str(err.value).startswith(f"{field}:")
    assert "\n" not in str(err.value)


def test_sealed_ingest_settings_default_to_x25519_and_no_plaintext(tmp_path: Path) -> None:
    assert (Settings().ingest_kem, Settings().allow_plaintext_ingest) == (Kem.X25519, False)
    env = load_settings({"SHREDLINE_INGEST_KEM": "mlkem768_x25519", "SHREDLINE_ALLOW_PLAINTEXT_INGEST": "true"})
    assert (env.ingest_kem, env.allow_plaintext_ingest) == (Kem.MLKEM768_X25519, True)
    toml = tmp_path / "s.toml"
    toml.write_text('ingest_kem = "X25519"\nallow_plaintext_ingest = false\n')
    assert load_settings({}, toml) == Settings()


def test_unknown_toml_key_and_missing_file_are_clear(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text('topic_prefx = "x"\n')
    with pytest.raises(ConfigError, match="unknown setting 'topic_prefx'"):
        load_settings({}, toml)
    with pytest.raises(ConfigError, match="file not found"):
        load_settings({}, tmp_path / "missing.toml")


def test_secrets_never_show_in_repr_or_str() -> None:
    canary = "canary-key-password-7f3a"
    settings = load_settings(
        {
            "SHREDLINE_TLS_CERT": "/c.pem",
            "SHREDLINE_TLS_KEY": "/k.pem",
            "SHREDLINE_TLS_KEY_PASSWORD": canary,
        }
    )
    assert isinstance(settings.tls_key_password, Secret)
    assert settings.tls_key_password.reveal() == canary
    for text in (repr(settings), str(settings), repr(settings.tls_key_password), f"{settings.tls_key_password}"):
        assert canary not in text
    assert "***" in repr(settings)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.topic_prefix = "x"  # type: ignore[misc]
