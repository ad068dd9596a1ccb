"""`touchflow whois`: ask a worker's lookup API about one person, print a summary.

The person is named by its id, or by a channel identity: a raw value is hashed here with
the PII key (pipeline.pii) so it never leaves the command; the worker only sees the
identity's seed person id. An id that now belongs to another person (merged away, or an
identity linked to someone) is followed to that person.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from pipeline import pii, whois
from pipeline.events import UserRef
from pipeline.identity import person_id_for
from pipeline.settings import Settings

MAX_HOPS = 3  # id -> linked person -> survivor of a later merge is two; one spare
TIMEOUT = 10.0


class WhoisError(Exception):
    """The API could not answer (unreachable, refused, disabled); the message says why."""


def person_of(person_id: str | None, id_type: str | None, raw: str | None, hashed: str | None,
              settings: Settings) -> str:  # fmt: skip
    """The person id to ask for: given, or the seed of a channel identity."""
    if person_id:
        return person_id
    if not id_type or not (raw or hashed):
        raise WhoisError("name a person id, or --id-type with --raw or --hashed")
    if raw is not None:
        try:
            hashed = pii.pseudonymise(id_type, raw, settings.pii_key_bytes())
        except ValueError as exc:
            raise WhoisError(str(exc)) from exc
    assert hashed is not None
    if not pii.is_pseudonymised(hashed):
        raise WhoisError("--hashed takes a keyed hash (h1:...); give a raw value with --raw")
    return person_id_for(UserRef(id_type, hashed))


def fetch(base_url: str, brand: str, person_id: str, token: str) -> tuple[int, dict[str, Any]]:
    url = f"{base_url.rstrip('/')}/v1/brands/{quote(brand)}/people/{quote(person_id)}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            body = {"error": exc.reason}
        return exc.code, body
    except OSError as exc:
        raise WhoisError(f"{url}: {exc}") from exc


def lookup(base_url: str, brand: str, person_id: str, token: str) -> tuple[int, dict[str, Any]]:
    """Ask, following `resolves_to` up to MAX_HOPS; the last status and body."""
    asked = [person_id]
    for _ in range(MAX_HOPS + 1):
        status, body = fetch(base_url, brand, asked[-1], token)
        target = body.get("resolves_to") if status == 200 else None
        if not target or target in asked:
            if len(asked) > 1:
                body["asked_for"] = asked[0]
            return status, body
        asked.append(str(target))
    raise WhoisError(f"more than {MAX_HOPS} forwarding hops from {person_id}: {asked}")


def main(settings: Settings, args: Any) -> int:
    """0 found, 1 unknown person, 2 the API did not answer the question."""
    token = args.token or (settings.api_token.get_secret_value() if settings.api_token else "")
    try:
        if not token:
            raise WhoisError("set TOUCHFLOW_API_TOKEN (the workers' lookup API token)")
        person = person_of(args.person_id, args.id_type, args.raw, args.hashed, settings)
        status, body = lookup(args.url or settings.api_url, args.brand, person, token)
    except WhoisError as exc:
        print(f"touchflow whois: {exc}", file=sys.stderr)
        return 2
    if status not in (200, 404):
        print(f"touchflow whois: the API answered {status}: {body.get('error')}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(body, ensure_ascii=False, sort_keys=True))
    else:
        if "asked_for" in body:
            print(f"{body['asked_for']} is now {body['person_id']}")
        print("\n".join(whois.summary_lines(body)))
    return 0 if body.get("found") else 1
