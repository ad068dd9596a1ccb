"""Kafka TLS / SASL settings become the right Faust credentials and aiokafka options.

Faust turns its credentials into aiokafka arguments itself
(`credentials_to_aiokafka_auth`); the sink and `touchflow topics` use
`client_options`. Both must come out the same, or the worker and the sink would talk to
the brokers differently.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from pipeline.kafka_security import client_options, faust_credentials, ssl_context
from pipeline.settings import Settings

BASE: dict[str, Any] = {"kafka_bootstrap": "kafka-1:9093"}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key (serves as CA bundle and client cert)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "client.pem", d / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=touchflow-test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def same_auth(settings: Settings) -> dict[str, Any]:
    """Faust's view and ours of the client arguments; asserts they agree and returns them."""
    ours = client_options(settings)
    faust_view = credentials_to_aiokafka_auth(faust_credentials(settings))
    theirs = {name: value for name, value in faust_view.items() if value is not None}
    assert ours.keys() == theirs.keys()
    for name, value in ours.items():
        if name == "ssl_context":
            assert isinstance(value, ssl.SSLContext)
            assert isinstance(theirs[name], ssl.SSLContext)
        else:
            assert theirs[name] == value, name
    return ours


def test_plaintext_is_the_default() -> None:
    s = Settings(**BASE)
    assert faust_credentials(s) is None
    assert ssl_context(s) is None
    assert same_auth(s) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_scram_carries_a_verifying_context(tls_files: tuple[Path, Path]) -> None:
    cafile, _ = tls_files
    s = Settings(
        **BASE,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="touchflow",
        sasl_password="s3cret-pass",
        ssl_cafile=cafile,
    )
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    # Faust picks SASL_SSL only when the credentials carry a context: SCRAM over TLS.
    assert creds.protocol.value == "SASL_SSL"
    assert creds.mechanism.value == "SCRAM-SHA-512"
    assert (creds.username, creds.password) == ("touchflow", "s3cret-pass")
    assert "s3cret" not in repr(creds)

    options = same_auth(s)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "touchflow"
    assert options["sasl_plain_password"] == "s3cret-pass"
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 1  # our CA file, not only system CAs


def test_sasl_plaintext_has_no_context() -> None:
    s = Settings(
        **BASE,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="u",
        sasl_password="p",
    )
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_PLAINTEXT" and creds.ssl_context is None
    assert "ssl_context" not in same_auth(s)


def test_mutual_tls(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    s = Settings(
        **BASE, security_protocol="SSL", ssl_cafile=cert, ssl_certfile=cert, ssl_keyfile=key
    )
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.protocol.value == "SSL"
    options = same_auth(s)
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options


def test_ssl_without_cafile_uses_system_cas() -> None:
    context = ssl_context(Settings(**BASE, security_protocol="SSL"))
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"security_protocol": "SASL_SSL", "sasl_username": "u"}, "sasl_password"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_password": "p"}, "sasl_username"),
        ({"security_protocol": "SSL", "ssl_certfile": "/c.pem"}, "ssl_keyfile"),
        ({"ssl_cafile": "/ca.pem"}, "security_protocol is PLAINTEXT"),
        ({"security_protocol": "SASL_SSL ", "sasl_username": "u"}, "security_protocol"),
        ({"sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
    ],
)
def test_inconsistent_security_fails_at_start_up(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**BASE, **fields)


def test_password_is_a_secret() -> None:
    s = Settings(
        **BASE, security_protocol="SASL_SSL", sasl_username="u", sasl_password="hunter22hunter22"
    )
    assert "hunter22" not in repr(s) and "hunter22" not in s.model_dump_json()
