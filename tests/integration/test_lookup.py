"""The live lookup API on two real workers sharing the partitions: any worker answers for
any person (the one asked forwards to the owner of the person's partition), only with the
bearer token, with hashed ids only; `touchflow whois` finds a person from a raw identity
that never leaves the command."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from pipeline.events import Chat, EventType, Identify, Purchase, Touchpoint, UserRef
from pipeline.identity import person_id_for
from pipeline.pii import pseudonymise
from pipeline.settings import Settings
from tests.integration.helpers import (
    PII_KEY,
    Worker,
    async_wait_until,
    partition_of,
    publish,
    run_cli,
    web_port,
)

pytestmark = pytest.mark.integration

TOKEN = "lookup-test-token-0123456789"
RAW_OPENID = "oWx-raw-openid-alice"
RAW_PHONE_PREFIX = "1380013800"  # + one digit: a phone whose seed sorts after alice's


def hashed(id_type: str, raw: str) -> UserRef:
    return UserRef(id_type, pseudonymise(id_type, raw, PII_KEY.encode()))


def people(partitions: int) -> tuple[UserRef, UserRef, UserRef, str]:
    """Alice (openid) and her phone, whose seed is larger than hers, so linking it does not
    merge her away; Bob (openid) on the other partition. Also Bob's raw openid."""
    alice = hashed("openid", RAW_OPENID)
    phone = next(
        p
        for d in "0123456789"
        if person_id_for(p := hashed("phone", RAW_PHONE_PREFIX + d)) > person_id_for(alice)
    )
    bob_raw = next(
        raw
        for n in range(200)
        if partition_of(hashed("openid", raw := f"oWx-raw-openid-bob-{n}"), partitions)
        != partition_of(alice, partitions)
    )
    return alice, phone, hashed("openid", bob_raw), bob_raw


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"identity_resolution": True, "api_token": SecretStr(TOKEN)})


async def ask(port: int, brand: str, person: str, token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    url = f"http://127.0.0.1:{port}/v1/brands/{brand}/people/{person}"
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return r.status, await r.text()


async def test_any_worker_answers_for_any_person_with_hashed_ids_only(
    settings: Settings, topics: Settings, workers, tmp_path: Path
) -> None:
    alice, phone, bob, bob_raw = people(settings.partitions)
    pa, pb = person_id_for(alice), person_id_for(bob)
    at = int(time.time() * 1000) - 3_600_000

    def ev(eid: str, user: UserRef, etype: EventType, dt: int, payload: object) -> Touchpoint:
        return Touchpoint(eid, etype, "lumi", "wechat_mp", user, at + dt, payload)  # type: ignore[arg-type]

    w1, w2 = workers(), workers()
    ports = {web_port(w1), web_port(w2)}
    await publish(
        settings,
        [
            ev("a-buy", alice, EventType.PURCHASE, 0, Purchase("o1", 30_000)),
            ev("a-link", alice, EventType.IDENTIFY, 1, Identify((phone,))),
            ev("b-chat", bob, EventType.CHAT, 2, Chat("inbound", "customer")),
        ],
    )

    async def settled() -> dict[tuple[int, str], dict[str, Any]]:
        """Every worker answers for both people, each person served by a different worker
        (two partitions, two workers), with every change and alice's two identities."""
        got = {}
        for port in ports:
            for person in (pa, pb):
                try:
                    status, text = await ask(port, "lumi", person)
                except aiohttp.ClientConnectionError:
                    return {}  # not listening yet
                if status != 200:
                    return {}
                got[port, person] = json.loads(text)
        served = {got[p, person]["served_by"] for p in ports for person in (pa, pb)}
        if served != {f"http://127.0.0.1:{p}" for p in ports}:
            return {}
        for (_, person), body in got.items():
            if len(body["recent_changes"]) < body["seq"]:
                return {}  # the profile follows the changes topic, a moment later
            if person == pa and len(body["identities"]) < 2:
                return {}
        return got

    answers = await async_wait_until(settled, 180, "both workers answering for both people")
    assert w1.alive() and w2.alive(), w1.log_tail() + w2.log_tail()

    for person in (pa, pb):
        owner = answers[next(iter(ports)), person]["served_by"]
        non_owner = next(p for p in ports if f"http://127.0.0.1:{p}" != owner)
        # Asked of the worker that does not own the person's partition: the owner's answer.
        assert answers[non_owner, person] == answers[int(owner.rsplit(":", 1)[1]), person]
    # Alice and Bob are on different partitions, so on different workers.
    assert partition_of(alice, 2) != partition_of(bob, 2)
    assert (
        answers[next(iter(ports)), pa]["served_by"] != answers[next(iter(ports)), pb]["served_by"]
    )

    a = answers[next(iter(ports)), pa]
    # One 300-yuan order today: R5 (< 7 days), F1 (< 2 orders), M2 (200..500 yuan), so
    # R high, F and M low: general_develop; AIPL P; lifecycle new; no built-in tag.
    assert a["found"] is True and a["person_id"] == pa and a["brand"] == "lumi"
    assert a["rfm"] == {"r": 5, "f": 1, "m": 2, "segment": "general_develop"}
    assert (a["aipl_stage"], a["lifecycle"], a["tags"]) == ("P", "new", [])
    assert a["activity"]["lifetime_orders"] == 1
    assert a["activity"]["lifetime_amount_minor"] == 30_000
    assert sorted((i["id_type"], i["id"], tuple(i["channels"])) for i in a["identities"]) == [
        ("openid", alice.id, ("wechat_mp",)),
        ("phone", phone.id, ()),
    ]
    changes = a["recent_changes"]
    assert [c["seq"] for c in changes] == list(range(1, a["seq"] + 1))
    moves = {(c["dimension"], c["to"]) for c in changes}
    assert {("aipl_stage", "P"), ("rfm_segment", "general_develop"), ("lifecycle", "new")} <= moves
    b = answers[next(iter(ports)), pb]
    # One inbound chat, no order: interest, no RFM segment, `new_customer` (0 orders).
    assert (b["aipl_stage"], b["rfm"]["segment"], b["tags"]) == ("I", None, ["new_customer"])

    port = next(iter(ports))
    unknown = "p" + "0" * 16
    status, text = await ask(port, "lumi", unknown)
    assert status == 404 and json.loads(text)["error"] == "unknown_person"
    status, _ = await ask(port, "mosu", pa)  # alice has no state at this brand
    assert status == 404
    for token in (None, "wrong-token", TOKEN + "x", ""):
        status, text = await ask(port, "lumi", pa, token)
        assert status == 401, token
        assert pa not in text and alice.id not in text
    status, text = await ask(port, "-lumi", pa)
    assert status == 400 and json.loads(text)["error"] == "bad_brand"

    # `touchflow whois` from the raw phone: hashed in the command, the worker resolves the
    # phone's seed to alice. Asked of every worker, via the non-owner of the phone's seed too.
    phone_raw = next(
        RAW_PHONE_PREFIX + d for d in "0123456789" if hashed("phone", RAW_PHONE_PREFIX + d) == phone
    )
    for p in ports:
        args = ["whois", "--brand", "lumi", "--id-type", "phone", "--raw", phone_raw]
        done = run_cli(settings, tmp_path / "cli.yaml", *args, "--url", f"http://127.0.0.1:{p}",
                       "--json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert body["person_id"] == pa and body["asked_for"] == person_id_for(phone)
        assert body["rfm"]["segment"] == "general_develop"
    done = run_cli(
        settings, tmp_path / "cli.yaml", "whois", pb, "--brand", "lumi",
        "--url", f"http://127.0.0.1:{port}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "AIPL       I" in done.stdout and "new_customer" in done.stdout
    printed = done.stdout
    done = run_cli(settings, tmp_path / "cli.yaml", "whois", unknown, "--brand", "lumi",
                   "--url", f"http://127.0.0.1:{port}")  # fmt: skip
    assert done.returncode == 1 and "unknown_person" in done.stdout

    # No raw personal data in any answer.
    everything = json.dumps(list(answers.values())) + json.dumps(body) + printed
    for raw in (RAW_OPENID, phone_raw, bob_raw):
        assert raw not in everything


@pytest.mark.parametrize("token", [TOKEN, None])
async def test_without_a_configured_token_the_api_is_off(
    settings: Settings, topics: Settings, tmp_path: Path, token: str | None
) -> None:
    """No TOUCHFLOW_API_TOKEN on the worker: every lookup is refused (503), not served."""
    off = settings.model_copy(update={"api_token": None})
    worker = Worker(off, tmp_path / "worker-off.log").start()
    try:

        async def refused() -> tuple[int, str] | None:
            try:
                return await ask(web_port(worker), "lumi", "p" + "0" * 16, token)
            except aiohttp.ClientConnectionError:
                return None  # not listening yet

        status, text = await async_wait_until(refused, 60, "the worker's web server")
        assert status == 503 and json.loads(text)["error"] == "api_disabled"
    finally:
        worker.stop()
