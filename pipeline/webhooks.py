"""`touchflow webhooks`: post matching segment changes to HTTP endpoints (docs/automations.md).

Each endpoint is its own `ChangeConsumer` (consumer group `<group_prefix>.<name>`), so a
failing endpoint holds back only its own partitions and never another endpoint's. A
delivery is one signed POST of the change as canonical JSON; 5xx, 408, 429, time-outs and
connection errors are retried with exponential back-off up to `max_attempts`, other
answers but 2xx are final; what still fails goes to the dead-letter topic. Requests wait for
the endpoint's token bucket. Config parsing, signing, verifying and the bucket are pure.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from pipeline import metrics
from pipeline.automation import Backoff, ChangeConsumer, Filter, FilterError, Permanent
from pipeline.automation import idempotency_key as change_key
from pipeline.codec import change_to_record
from pipeline.settings import Settings
from pipeline.state import SegmentChange

SIGNATURE_HEADER = "X-Touchflow-Signature"
IDEMPOTENCY_HEADER = "X-Touchflow-Idempotency-Key"
ATTEMPT_HEADER = "X-Touchflow-Attempt"
TOLERANCE_SECONDS = 300  # how old a signature a receiver should accept (replay window)
MIN_SECRET_BYTES = 16
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RETRYABLE_STATUS = frozenset({408, 429})
ENDPOINT_KEYS = (
    "name", "url", "secret_env", "filters", "timeout_seconds", "max_attempts", "backoff",
    "rate_limit", "headers",
)  # fmt: skip
TOP_KEYS = ("endpoints", "dead_letter_topic", "group_prefix", "start_from", "metrics_port")
_RESERVED_HEADERS = {h.lower() for h in (SIGNATURE_HEADER, IDEMPOTENCY_HEADER, ATTEMPT_HEADER)}


class WebhookConfigError(ValueError):
    """A webhooks config that cannot be used; the message names the exact place."""


# -- config (pure) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    url: str
    secret: bytes = field(repr=False)
    filters: Filter = field(default_factory=Filter)
    timeout_seconds: float = 5.0
    max_attempts: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    rate_limit: RateLimit | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    endpoints: tuple[Endpoint, ...]
    dead_letter_topic: str
    group_prefix: str
    start_from: Literal["earliest", "latest"] = "latest"
    metrics_port: int = 0


def _number(spec: Mapping[str, Any], key: str, where: str, default: float, low: float) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise WebhookConfigError(f"{where}.{key}: expected a number >= {low}, got {value!r}")
    return float(value)


def _int(spec: Mapping[str, Any], key: str, where: str, default: int, low: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise WebhookConfigError(f"{where}.{key}: expected an integer >= {low}, got {value!r}")
    return value


def _mapping(value: Any, where: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise WebhookConfigError(f"{where}: expected a mapping, got {value!r}")
    unknown = set(value) - set(keys)
    if unknown:
        raise WebhookConfigError(f"{where}: unknown keys {sorted(unknown)}; expected {list(keys)}")
    return value


def _endpoint(spec: Any, where: str, env: Mapping[str, str]) -> Endpoint:
    if isinstance(spec, Mapping) and "secret" in spec:
        raise WebhookConfigError(f"{where}.secret: never inline; name an environment variable")
    spec = _mapping(spec, where, ENDPOINT_KEYS)
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise WebhookConfigError(
            f"{where}.name: expected a slug (a-z, 0-9, _ and -, up to 48), got {name!r}"
        )
    url = spec.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookConfigError(f"{where}.url: expected an http(s) URL, got {url!r}")
    secret_env = spec.get("secret_env")
    if not isinstance(secret_env, str) or not _ENV.fullmatch(secret_env):
        raise WebhookConfigError(
            f"{where}.secret_env: expected an environment variable name, got {secret_env!r}"
        )
    secret = env.get(secret_env, "")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise WebhookConfigError(
            f"{where}.secret_env: ${secret_env} is unset or shorter than {MIN_SECRET_BYTES} bytes"
        )
    try:
        filters = Filter.from_spec(spec.get("filters"), f"{where}.filters")
    except FilterError as exc:
        raise WebhookConfigError(str(exc)) from None
    b = _mapping(spec.get("backoff") or {}, f"{where}.backoff", Backoff.__slots__)
    initial = _number(b, "initial_seconds", f"{where}.backoff", 0.5, 0)
    multiplier = _number(b, "multiplier", f"{where}.backoff", 2.0, 1)
    ceiling = _number(b, "max_seconds", f"{where}.backoff", 30.0, 0)
    rate_limit = None
    if spec.get("rate_limit") is not None:
        r = _mapping(spec["rate_limit"], f"{where}.rate_limit", ("per_second", "burst"))
        per_second = _number(r, "per_second", f"{where}.rate_limit", 0, 0)
        if per_second <= 0:
            raise WebhookConfigError(f"{where}.rate_limit.per_second: expected a number > 0")
        rate_limit = RateLimit(per_second, _int(r, "burst", f"{where}.rate_limit", 1, 1))
    headers = spec.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise WebhookConfigError(f"{where}.headers: expected a mapping of strings to strings")
    reserved = {h for h in headers if h.lower() in _RESERVED_HEADERS | {"content-type"}}
    if reserved:
        raise WebhookConfigError(f"{where}.headers: {sorted(reserved)} are set by touchflow")
    return Endpoint(
        name=name,
        url=str(url),
        secret=secret.encode(),
        filters=filters,
        timeout_seconds=_number(spec, "timeout_seconds", where, 5.0, 0.001),
        max_attempts=_int(spec, "max_attempts", where, 5, 1),
        backoff=Backoff(initial, multiplier, ceiling),
        rate_limit=rate_limit,
        headers=dict(headers),
    )


def load_config(spec: Any, env: Mapping[str, str], settings: Settings) -> WebhooksConfig:
    """Validate a webhooks config (YAML data); secrets are read from `env` by name."""
    spec = _mapping(spec, "webhooks", TOP_KEYS)
    raw_endpoints = spec.get("endpoints")
    if not isinstance(raw_endpoints, list) or not raw_endpoints:
        raise WebhookConfigError("webhooks.endpoints: expected a non-empty list of endpoints")
    endpoints: list[Endpoint] = []
    for i, item in enumerate(raw_endpoints):
        endpoint = _endpoint(item, f"webhooks.endpoints[{i}]", env)
        if any(e.name == endpoint.name for e in endpoints):
            raise WebhookConfigError(
                f"webhooks.endpoints[{i}].name: endpoint {endpoint.name!r} is defined twice"
            )
        endpoints.append(endpoint)
    start_from = spec.get("start_from", "latest")
    if start_from not in ("earliest", "latest"):
        raise WebhookConfigError(
            f"webhooks.start_from: expected earliest or latest, got {start_from!r}"
        )
    for key in ("dead_letter_topic", "group_prefix"):
        if key in spec and (not isinstance(spec[key], str) or not spec[key]):
            raise WebhookConfigError(f"webhooks.{key}: expected a non-empty string")
    port = _int(spec, "metrics_port", "webhooks", 0, 0)
    if port > 65535:
        raise WebhookConfigError(f"webhooks.metrics_port: expected a port <= 65535, got {port}")
    return WebhooksConfig(
        endpoints=tuple(endpoints),
        dead_letter_topic=spec.get("dead_letter_topic", f"{settings.app_id}.webhooks-dlq"),
        group_prefix=spec.get("group_prefix", f"{settings.app_id}-webhooks"),
        start_from=start_from,
        metrics_port=port,
    )


# -- body and signature (pure) -------------------------------------------------------------


def body(change: SegmentChange) -> bytes:
    """The change as canonical JSON: sorted keys, no spaces, UTF-8 (the bytes signed)."""
    record = change_to_record(change)
    record["idempotency_key"] = change_key(change)
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: bytes, payload: bytes, timestamp: int) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: bytes, payload: bytes, header: str, now: float, tolerance: float = TOLERANCE_SECONDS
) -> bool:
    """What a receiver does: the header's HMAC matches the raw body and `t` is recent."""
    fields: dict[str, str] = {}
    for part in header.split(","):
        key, _, val = part.strip().partition("=")
        fields.setdefault(key, val)
    try:
        t = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - t) > tolerance:
        return False
    expected = signature(secret, payload, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


# -- rate limit (pure: the caller passes the clock) ----------------------------------------


class TokenBucket:
    """`per_second` tokens a second, at most `burst` saved up. `reserve(now)` takes a token
    and returns how long to wait until it is really there (0 = send now)."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.rate = limit.per_second
        self.burst = float(limit.burst)
        self.tokens = float(limit.burst)
        self.at = now

    def reserve(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= 1.0  # may go negative: a debt later reservations queue behind
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


# -- delivery ------------------------------------------------------------------------------


class DeliveryFailed(Exception):
    """One attempt failed in a way a retry may fix (5xx, 408, 429, time-out, network)."""


def result_class(status: int) -> str:
    return f"{status // 100}xx" if 200 <= status < 600 else "error"


class Deliverer:
    """Posts one change to one endpoint per call; the ChangeConsumer retries and dead-letters."""

    def __init__(self, endpoint: Endpoint, session: aiohttp.ClientSession) -> None:
        self.endpoint = endpoint
        self._session = session
        self._m = metrics.webhook_endpoint(endpoint.name)
        self._bucket = (
            None
            if endpoint.rate_limit is None
            else TokenBucket(endpoint.rate_limit, time.monotonic())
        )
        self._lock = asyncio.Lock()  # partitions share the bucket: reserve one at a time
        self._attempts: dict[str, int] = {}

    async def _throttle(self) -> None:
        if self._bucket is None:
            return
        async with self._lock:
            wait = self._bucket.reserve(time.monotonic())
        if wait > 0:
            self._m.throttled.inc()
            await asyncio.sleep(wait)

    async def __call__(self, change: SegmentChange) -> None:
        key = change_key(change)
        attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
        final = True
        try:
            await self._post(change, key, attempt)
        except DeliveryFailed:
            final = attempt >= self.endpoint.max_attempts
            raise
        finally:
            if final:  # delivered, refused, or out of attempts: forget the count
                self._attempts.pop(key, None)

    async def _post(self, change: SegmentChange, key: str, attempt: int) -> None:
        e = self.endpoint
        await self._throttle()
        payload = body(change)
        headers = {
            **e.headers,
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(e.secret, payload, int(time.time())),
            IDEMPOTENCY_HEADER: key,
            ATTEMPT_HEADER: str(attempt),
        }
        started = time.monotonic()
        try:
            async with self._session.post(
                e.url,
                data=payload,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=e.timeout_seconds),
                allow_redirects=False,
            ) as response:
                status = response.status
                await response.read()
        except TimeoutError:
            self._m.results["timeout"].inc()
            raise DeliveryFailed(f"{e.name}: no answer within {e.timeout_seconds}s") from None
        except aiohttp.ClientError as exc:
            self._m.results["error"].inc()
            raise DeliveryFailed(f"{e.name}: {type(exc).__name__}: {exc}") from None
        finally:
            self._m.seconds.observe(time.monotonic() - started)
        self._m.results[result_class(status)].inc()
        if 200 <= status < 300:
            return
        if status >= 500 or status in _RETRYABLE_STATUS:
            raise DeliveryFailed(f"{e.name}: HTTP {status}")
        raise Permanent(f"{e.name}: HTTP {status} (not retried)")


# -- the bridge ----------------------------------------------------------------------------


def consumers(settings: Settings, config: WebhooksConfig) -> list[tuple[Endpoint, ChangeConsumer]]:
    """One consumer group per endpoint: independent offsets, retries and dedup."""
    return [
        (
            e,
            ChangeConsumer(
                settings,
                group=f"{config.group_prefix}.{e.name}",
                filters=e.filters,
                dlq_topic=config.dead_letter_topic,
                max_attempts=e.max_attempts,
                backoff=e.backoff,
                start_from=config.start_from,
                name=e.name,
            ),
        )
        for e in config.endpoints
    ]


async def run(settings: Settings, config: WebhooksConfig, stop: asyncio.Event) -> None:
    """Run every endpoint's consumer until `stop` is set."""
    async with aiohttp.ClientSession() as session:
        tasks = []
        for endpoint, consumer in consumers(settings, config):
            deliver = Deliverer(endpoint, session)
            tasks.append(asyncio.create_task(consumer.run(deliver, stop), name=endpoint.name))
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()  # an endpoint's consumer that crashed: raise it
