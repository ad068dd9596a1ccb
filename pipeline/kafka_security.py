"""Kafka TLS / SASL from Settings, in the two shapes touchflow's clients take.

`client_options` is for aiokafka clients touchflow makes itself (sink, admin, demo);
`faust_credentials` is Faust's `broker_credentials`. Faust decides SASL_SSL vs
SASL_PLAINTEXT by whether its SASLCredentials carry an ssl context, so the context is
always built here from the same settings: SCRAM without one would run over plaintext.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context

from pipeline.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context for SSL / SASL_SSL (system CAs unless ssl_cafile), else None."""
    if not settings.security_protocol.endswith("SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.ssl_cafile,
        certfile=settings.ssl_certfile,
        keyfile=settings.ssl_keyfile,
    )
    return context


def _sasl_password(settings: Settings) -> str:
    assert settings.sasl_password is not None  # Settings checks it for SASL protocols
    return settings.sasl_password.get_secret_value()


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (consumer, producer, admin)."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = _sasl_password(settings)
    return options


def faust_credentials(settings: Settings) -> Any:
    """Faust's `broker_credentials`: SASLCredentials, SSLCredentials or None (plaintext)."""
    import faust  # only the worker needs Faust

    context = ssl_context(settings)
    if settings.security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=_sasl_password(settings),
            ssl_context=context,
            mechanism=settings.sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
