"""Managed Kafka: SASL and TLS settings reach every client herald builds."""

from __future__ import annotations

import ssl
from typing import Any
from unittest.mock import MagicMock

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from infra.settings import KafkaSettings
from processors.app import create_app
from processors.settings import ProcessorSettings
from producers.settings import IntakeSettings
from senders.providers.settings import DEV_CREDENTIALS

CA = str(DEV_CREDENTIALS / "emulator-tls.crt")
SASL_SSL: dict[str, Any] = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "herald",
    "sasl_password": "s3cret",
    "ssl_ca_location": CA,
}


def test_plaintext_by_default_with_no_security_keys() -> None:
    config = KafkaSettings().base_config("x")
    assert not any(k.startswith(("security.", "sasl.", "ssl.")) for k in config)
    assert KafkaSettings().faust_credentials() is None


def test_sasl_ssl_reaches_producer_consumer_and_admin_configs() -> None:
    kafka = KafkaSettings(**SASL_SSL)
    for config in (
        kafka.base_config("a"),
        kafka.producer_config("p"),
        kafka.consumer_config("c", "g"),
    ):
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.mechanism"] == "SCRAM-SHA-512"
        assert config["sasl.username"] == "herald"
        assert config["sasl.password"] == "s3cret"
        assert config["ssl.ca.location"] == CA
    assert "s3cret" not in repr(kafka)


def test_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("HERALD_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("HERALD_KAFKA__SASL_USERNAME", "key")
    monkeypatch.setenv("HERALD_KAFKA__SASL_PASSWORD", "secret")
    kafka = IntakeSettings().kafka
    assert kafka.base_config("x")["sasl.password"] == "secret"


def test_mutual_tls() -> None:
    kafka = KafkaSettings(
        security_protocol="SSL",
        ssl_certificate_location="/etc/herald/client.crt",
        ssl_key_location="/etc/herald/client.key",
        ssl_key_password="k",
        ssl_endpoint_identification=False,
    )
    config = kafka.base_config("x")
    assert config["ssl.certificate.location"] == "/etc/herald/client.crt"
    assert config["ssl.key.password"] == "k"
    assert config["ssl.endpoint.identification.algorithm"] == "none"


def test_faust_gets_the_same_credentials() -> None:
    creds = KafkaSettings(**SASL_SSL).faust_credentials()
    assert isinstance(creds, SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == (
        "herald",
        "s3cret",
        "SCRAM-SHA-512",
    )
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    plain = KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p")
    assert isinstance(plain.faust_credentials(), SASLCredentials)
    assert plain.faust_credentials().ssl_context is None  # type: ignore[union-attr]
    assert isinstance(KafkaSettings(security_protocol="SSL").faust_credentials(), SSLCredentials)


def test_the_processor_app_uses_them(tmp_path: Any) -> None:
    settings = ProcessorSettings(kafka=KafkaSettings(**SASL_SSL), datadir=tmp_path)
    app = create_app(settings, MagicMock(), MagicMock())
    assert isinstance(app.conf.broker_credentials, SASLCredentials)


def test_compression_is_lz4_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert KafkaSettings().producer_config("x")["compression.type"] == "lz4"
    monkeypatch.setenv("HERALD_KAFKA__COMPRESSION", "none")
    assert ProcessorSettings().kafka.producer_config("x")["compression.type"] == "none"
    with pytest.raises(ValueError, match="compression"):
        KafkaSettings(compression="brotli")  # type: ignore[arg-type]


def test_linger_is_20_ms_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert KafkaSettings().producer_config("x")["linger.ms"] == 20
    monkeypatch.setenv("HERALD_KAFKA__LINGER_MS", "5")
    assert ProcessorSettings().kafka.producer_config("x")["linger.ms"] == 5
    with pytest.raises(ValueError, match="linger_ms"):
        KafkaSettings(linger_ms=-1)


def test_fausts_changelog_producer_lingers_and_compresses_as_ours(tmp_path: Any) -> None:
    settings = ProcessorSettings(kafka=KafkaSettings(linger_ms=50), datadir=tmp_path)
    app = create_app(settings, MagicMock(), MagicMock())
    assert app.conf.producer_linger == pytest.approx(0.050)
    assert app.conf.producer_compression_type == "lz4"
    plain = ProcessorSettings(kafka=KafkaSettings(compression="none"), datadir=tmp_path)
    assert create_app(plain, MagicMock(), MagicMock()).conf.producer_compression_type is None
