"""SASL / TLS settings reach the aiokafka clients, and secrets never leak into text."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from geodesic.runtime.kafka import (
    KafkaSettings,
    admin_config,
    consumer_config,
    faust_settings,
    make_admin,
    make_consumer,
    make_producer,
    producer_config,
)

SECRET = "s3cr3t-sasl-password"
KEY_PASSWORD = "k3y-passphrase"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throw-away self-signed certificate (used as CA and as client certificate)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", str(key), "-out",
         str(cert), "-days", "1", "-subj", "/CN=localhost", "-passout", f"pass:{KEY_PASSWORD}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def sasl_ssl(tls_files: tuple[Path, Path]) -> KafkaSettings:
    cert, key = tls_files
    return KafkaSettings(
        bootstrap="127.0.0.1:9093",
        broker_flavor="kafka",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc-scorer",
        sasl_password=SECRET,
        ssl_cafile=cert,
        ssl_certfile=cert,
        ssl_keyfile=key,
        ssl_key_password=KEY_PASSWORD,
    )


def assert_sasl_ssl(config: dict) -> None:
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "svc-scorer"
    assert config["sasl_plain_password"] == SECRET
    context = config["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.get_ca_certs(), "the configured CA file was not loaded"


def test_sasl_ssl_settings_reach_consumer_producer_and_admin_configs(sasl_ssl: KafkaSettings):
    for config in (
        consumer_config(sasl_ssl, group_id="g"),
        producer_config(sasl_ssl),
        admin_config(sasl_ssl),
    ):
        assert_sasl_ssl(config)


async def test_sasl_ssl_settings_reach_the_aiokafka_clients_themselves(sasl_ssl: KafkaSettings):
    consumer = make_consumer(sasl_ssl, group_id="g")
    producer = make_producer(sasl_ssl)
    admin = make_admin(sasl_ssl)
    for client in (consumer._client, producer.client, admin._client):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "svc-scorer"
        assert client._sasl_plain_password == SECRET
        assert isinstance(client._ssl_context, ssl.SSLContext)
        assert client._ssl_context.get_ca_certs()
    await producer.client.close()


def test_sasl_ssl_settings_reach_faust_credentials(sasl_ssl: KafkaSettings):
    creds = faust_settings(sasl_ssl)["broker_credentials"]
    assert creds.username == "svc-scorer" and creds.password == SECRET
    assert creds.mechanism.value == "SCRAM-SHA-512"
    assert isinstance(creds.ssl_context, ssl.SSLContext)


def test_sasl_ssl_from_the_environment(monkeypatch: pytest.MonkeyPatch, tls_files):
    cert, _key = tls_files
    monkeypatch.setenv("GEODESIC_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("GEODESIC_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("GEODESIC_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("GEODESIC_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("GEODESIC_KAFKA_SSL_CAFILE", str(cert))
    config = producer_config(KafkaSettings())
    assert (config["security_protocol"], config["sasl_mechanism"]) == ("SASL_SSL", "PLAIN")
    assert config["sasl_plain_password"] == SECRET and config["ssl_context"].get_ca_certs()


def test_plaintext_has_no_tls_and_no_sasl():
    config = consumer_config(KafkaSettings(), group_id="g")
    assert config["security_protocol"] == "PLAINTEXT"
    assert "ssl_context" not in config and "sasl_mechanism" not in config


def test_secrets_never_appear_in_repr_str_or_dumps(sasl_ssl: KafkaSettings):
    for text in (repr(sasl_ssl), str(sasl_ssl), sasl_ssl.model_dump_json()):
        assert SECRET not in text and KEY_PASSWORD not in text


def test_tls_client_certificate_needs_its_key():
    with pytest.raises(ValueError, match="ssl_certfile and ssl_keyfile"):
        KafkaSettings(security_protocol="SSL", ssl_certfile=__file__)
