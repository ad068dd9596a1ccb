"""The webhook bridge's pure parts: config validation, body, signature, token bucket."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from pipeline.automation import Backoff, Filter
from pipeline.settings import Settings
from pipeline.state import Scores, SegmentChange
from pipeline.webhooks import (
    RateLimit,
    TokenBucket,
    WebhookConfigError,
    body,
    load_config,
    result_class,
    signature,
    verify,
)

SECRET = "s3cret-for-unit-tests-0001"
ENV = {"WECOM_SECRET": SECRET, "SHORT": "tooshort"}
SETTINGS = Settings(app_id="tf")


def endpoint(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "wecom",
        "url": "http://127.0.0.1:9/h",
        "secret_env": "WECOM_SECRET",
    }
    spec.update(over)
    return spec


def test_full_config() -> None:
    cfg = load_config(
        {
            "endpoints": [
                endpoint(
                    filters={"dimensions": ["tag"], "tags": ["vip"], "tag_change": "added"},
                    timeout_seconds=2,
                    max_attempts=3,
                    backoff={"initial_seconds": 0.1, "max_seconds": 1},
                    rate_limit={"per_second": 5, "burst": 2},
                    headers={"X-Source": "touchflow"},
                ),
                endpoint(name="coupons", url="https://coupons.example/api"),
            ],
            "start_from": "earliest",
            "metrics_port": 9310,
        },
        ENV,
        SETTINGS,
    )
    first, second = cfg.endpoints
    assert first.secret == SECRET.encode()
    assert first.filters.tags == frozenset({"vip"})
    assert first.backoff == Backoff(0.1, 2.0, 1.0)
    assert first.rate_limit == RateLimit(5.0, 2)
    assert (first.timeout_seconds, first.max_attempts) == (2.0, 3)
    assert second.filters == Filter() and second.rate_limit is None and second.max_attempts == 5
    assert cfg.dead_letter_topic == "tf.webhooks-dlq" and cfg.group_prefix == "tf-webhooks"
    assert (cfg.start_from, cfg.metrics_port) == ("earliest", 9310)
    assert "s3cret" not in repr(cfg)  # the secret never shows in logs


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "webhooks.endpoints: expected a non-empty list of endpoints"),
        ({"endpoints": [endpoint()], "retries": 3}, "webhooks: unknown keys ['retries']"),
        ({"endpoints": [endpoint(name="WeCom")]}, "webhooks.endpoints[0].name: expected a slug"),
        (
            {"endpoints": [endpoint(), endpoint()]},
            "webhooks.endpoints[1].name: endpoint 'wecom' is defined twice",
        ),
        (
            {"endpoints": [endpoint(url="ftp://x/y")]},
            "webhooks.endpoints[0].url: expected an http(s) URL, got 'ftp://x/y'",
        ),
        (
            {"endpoints": [endpoint(secret="abc")]},
            "webhooks.endpoints[0].secret: never inline; name an environment variable",
        ),
        (
            {"endpoints": [endpoint(secret_env="MISSING")]},
            "webhooks.endpoints[0].secret_env: $MISSING is unset or shorter than 16 bytes",
        ),
        (
            {"endpoints": [endpoint(secret_env="SHORT")]},
            "webhooks.endpoints[0].secret_env: $SHORT is unset or shorter than 16 bytes",
        ),
        (
            {"endpoints": [endpoint(filters={"dimensions": ["lifecycles"]})]},
            "webhooks.endpoints[0].filters.dimensions: unknown dimension 'lifecycles'",
        ),
        (
            {"endpoints": [endpoint(timeout_seconds=0)]},
            "webhooks.endpoints[0].timeout_seconds: expected a number >= 0.001, got 0",
        ),
        (
            {"endpoints": [endpoint(max_attempts=0)]},
            "webhooks.endpoints[0].max_attempts: expected an integer >= 1, got 0",
        ),
        (
            {"endpoints": [endpoint(backoff={"initial": 1})]},
            "webhooks.endpoints[0].backoff: unknown keys ['initial']",
        ),
        (
            {"endpoints": [endpoint(rate_limit={"per_second": 0})]},
            "webhooks.endpoints[0].rate_limit.per_second: expected a number > 0",
        ),
        (
            {"endpoints": [endpoint(headers={"X-Touchflow-Signature": "x"})]},
            "webhooks.endpoints[0].headers: ['X-Touchflow-Signature'] are set by touchflow",
        ),
        (
            {"endpoints": [endpoint()], "start_from": "beginning"},
            "webhooks.start_from: expected earliest or latest, got 'beginning'",
        ),
    ],
)
def test_config_errors_name_the_place(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(WebhookConfigError) as info:
        load_config(spec, ENV, SETTINGS)
    assert str(info.value).startswith(message), str(info.value)


def change(seq: int = 3) -> SegmentChange:
    return SegmentChange(
        "lumi", "p-7", "tag", None, "vip", "tag:vip/x", "e-1", 1_700_000_000_000, seq,
        Scores(1, 2, 3), Scores(1, 2, 5), "v1",
    )  # fmt: skip


def test_body_is_canonical_json_of_the_change() -> None:
    raw = body(change())
    assert raw.startswith(b'{"brand":"lumi","cause_event_id":"e-1","dimension":"tag",')
    assert b" " not in raw
    decoded = json.loads(raw)
    assert decoded["idempotency_key"] == "lumi:p-7:3"
    assert decoded["from_value"] is None and decoded["to_value"] == "vip"
    assert decoded["scores_after"] == {"r": 1, "f": 2, "m": 5}
    assert body(change()) == raw  # same change, same bytes


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    raw = b'{"a":1}'
    # Computed independently: HMAC-SHA256(key, "1700000000." + body).
    expected = hmac.new(b"k" * 16, b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert signature(b"k" * 16, raw, 1_700_000_000) == f"t=1700000000,v1={expected}"


def test_verify_accepts_only_the_right_secret_body_and_a_recent_time() -> None:
    secret, raw = SECRET.encode(), body(change())
    header = signature(secret, raw, 1_700_000_000)
    assert verify(secret, raw, header, now=1_700_000_100)
    assert not verify(b"other-secret-0000000", raw, header, now=1_700_000_100)
    assert not verify(secret, raw + b" ", header, now=1_700_000_100)  # body changed
    assert not verify(secret, raw, header, now=1_700_000_301)  # older than 300 s: a replay
    assert verify(secret, raw, header, now=1_700_000_301, tolerance=400)
    assert not verify(secret, raw, "v1=abc", now=1_700_000_000)  # no timestamp
    assert not verify(secret, raw, "t=x,v1=abc", now=1_700_000_000)
    forged = header.replace("t=1700000000", "t=1700000200")  # timestamp moved, MAC not
    assert not verify(secret, raw, forged, now=1_700_000_200)


def test_token_bucket_spends_the_burst_then_paces() -> None:
    bucket = TokenBucket(RateLimit(per_second=4, burst=2), now=100.0)
    assert bucket.reserve(100.0) == 0.0
    assert bucket.reserve(100.0) == 0.0  # the burst of 2
    assert bucket.reserve(100.0) == pytest.approx(0.25)  # 1 token / 4 per s
    assert bucket.reserve(100.0) == pytest.approx(0.5)  # queued behind the previous one
    # 1 s later 4 tokens came in, 2 of them owed: 2 left, never more than the burst.
    assert bucket.reserve(101.0) == 0.0
    assert bucket.reserve(101.0) == 0.0
    assert bucket.reserve(101.0) == pytest.approx(0.25)
    idle = TokenBucket(RateLimit(per_second=1, burst=3), now=0.0)
    idle.reserve(1000.0)  # a long pause refills to the burst only
    assert idle.tokens == 2.0


def test_result_classes() -> None:
    assert [result_class(s) for s in (200, 204, 302, 404, 429, 503, 99)] == [
        "2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "error",
    ]  # fmt: skip
