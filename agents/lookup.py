"""Live per-person lookup on the workers: `GET /v1/brands/{brand}/people/{person_id}`.

Any worker answers: the one asked finds the owner of the person's partition from the
group assignment (Faust's router over the state table's changelog) and forwards the
request to the owner's advertised URL (`Settings.web_url`); the owner answers from its
in-memory tables. Every partition of every touchflow topic with the same partition count
is assigned to one worker (Faust co-partitions them), so the owner holds the person's
state, profile, alias and identity link alike.

Beside the state (not changed here), a small `person_profile` table keeps what the state
does not: the hashed channel ids seen, people merged in, and the last changes per brand.
It learns from the segmentation agent as each event is applied (`Segmentation.on_applied`)
and from a tap agent on the co-partitioned changes topic.
The logic is in pipeline.whois; docs/lookup.md has the reasons.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import aiohttp
import faust
from faust.exceptions import NotReady
from faust.web import Request, Response, View
from yarl import URL

from agents import identity
from agents.segmentation import Segmentation
from pipeline import whois
from pipeline.codec import Codecs
from pipeline.events import Identify, Touchpoint, UserRef
from pipeline.settings import Settings
from pipeline.state import state_key

PROFILE_TABLE = "person_profile"
PATH = "/v1/brands/{brand}/people/{person_id}"
# Set on a forwarded request: its receiver answers itself or fails, never forwards again,
# so a stale assignment during a rebalance cannot bounce a request between two workers.
FORWARDED = "X-Touchflow-Forwarded"
FORWARD_TIMEOUT = 5.0  # seconds


def register(app: faust.App, settings: Settings, codecs: Codecs, seg: Segmentation) -> None:
    state_table = seg.table
    raw: dict[str, Any] = {
        "key_serializer": "raw",
        "value_serializer": "raw",
        "partitions": settings.partitions,
    }
    limits = settings.limits()
    keep = settings.lookup_recent_changes
    token = settings.api_token.get_secret_value() if settings.api_token else None
    brands, groups = limits.brands, limits.groups
    # The profile exists only while the API is on: without a token nobody can read it, and
    # the workers do exactly what they did before (no table, no tap, no changelog writes).
    profiles: dict[bytes, str] | Any = {}
    if token:
        profiles = app.Table(
            PROFILE_TABLE,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=str,  # compact JSON text: ~2 KB a person with 10 changes
        )

    def table(name: str) -> Any:
        return app.tables.get(name)  # absent without identity resolution

    def profile_of(key: bytes) -> whois.Profile:
        text = profiles.get(key)
        return whois.profile_from_json(json.loads(text) if text else None)

    def update(person: str, change: Any) -> None:
        key = person.encode()
        before = profile_of(key)
        after = change(before)
        if after != before:
            profiles[key] = json.dumps(whois.profile_to_json(after), separators=(",", ":"))

    def on_applied(m: Any, tp: Touchpoint | None, person: str) -> None:
        """An event applied to `person`'s state, or (tp None) a merge-in of another's."""
        if tp is None:
            absorbed = identity.header(m, identity.MERGE_FROM) or ""
            update(person, partial(whois.with_merged, absorbed=absorbed))
            return
        ids: list[tuple[UserRef, str | None]] = [(tp.user, tp.channel)]
        if isinstance(tp.payload, Identify):
            ids += [(u, None) for u in tp.payload.identities]

        def learn(p: whois.Profile) -> whois.Profile:
            for user, channel in ids:
                p = whois.with_identity(p, user.id_type, user.id, channel)
            return p

        update(person, learn)

    async def tap(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            c = codecs.decode_change(event.message.value)
            update(c.person_id, partial(whois.with_change, c=c, limit=keep))

    if token:
        seg.on_applied = on_applied
        if keep > 0:
            app.agent(app.topic(settings.changes_topic, **raw), name="person-profile")(tap)

    def owns(key: bytes) -> bool:
        topic = state_table.changelog_topic.get_topic_name()
        tp = app.producer.key_partition(topic, key)
        return bool(app.assignor.is_active(tp))

    def answer(brand: str, person_id: str) -> tuple[int, dict[str, Any]]:
        key = person_id.encode()
        aliases, identities = table("aliases"), table("identities")
        resolves_to = aliases.get(key) if aliases is not None else None
        state = state_table.get(state_key(brand, person_id).encode())
        if resolves_to is None and state is None and identities is not None:
            resolves_to = identities.get(key)
        return whois.person_answer(brand, person_id, state, profile_of(key), resolves_to)

    async def forward(view: View, request: Request, owner: URL) -> Response:
        url = owner.with_path(request.url.path).with_query(request.url.query)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        headers[FORWARDED] = str(app.conf.canonical_url)
        timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT)
        try:
            async with app.http_client.get(url, headers=headers, timeout=timeout) as r:
                body = await r.read()
                return view.bytes(body, content_type=r.content_type, status=r.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = f"owner {owner} unreachable ({type(exc).__name__})"
            return view.error(503, "owner_unreachable", detail=detail)

    @app.page(PATH, name="touchflow-person")
    async def person(self: View, request: Request, brand: str, person_id: str) -> Response:
        denied = whois.authorise(request.headers.get("Authorization"), token)
        denied = denied or whois.check_request(brand, person_id, brands, groups)
        if denied is not None:
            return self.error(whois.STATUS[denied], denied.value)
        key = person_id.encode()
        try:
            owner = app.router.key_store(state_table.name, key)
        except (KeyError, NotReady):
            return self.error(503, "no_assignment", detail="partitions not assigned yet")
        here = URL(str(app.conf.canonical_url))
        if (owner.host, owner.port) != (here.host, here.port) and FORWARDED not in request.headers:
            return await forward(self, request, owner)
        if not owns(key):
            # Asked as the owner but the partition is not ours: a rebalance is under way, or
            # workers advertise the same URL (set TOUCHFLOW_WEB_URL per worker).
            return self.error(503, "not_owner", detail=f"{here} does not own this partition")
        if app.in_recovery or not app.tables.recovery.completed.is_set():
            return self.error(503, "recovering", detail="table recovery in progress")
        status, body = answer(brand, person_id)
        body["served_by"] = str(here)
        return self.json(body, status=status)
