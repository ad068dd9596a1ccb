"""The segmentation agent: touchpoint in -> per-person state -> segment changes out.

Thin adapter: decoding, contract checks and every decision live in `pipeline`; here we only
read the message, look up and store the state, and send what the core returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import faust
from faust.serializers.codecs import Codec

from pipeline import state as core
from pipeline.codec import Codecs
from pipeline.errors import Rejected
from pipeline.identity import person_id_for
from pipeline.ingest import accept
from pipeline.settings import Settings

TABLE_NAME = "person_state"  # Settings.changelog_topic derives the changelog name from it


class StateCodec(Codec):  # type: ignore[misc]
    """Table values are PersonState objects in memory and Avro (wire format) in the changelog."""

    def __init__(self, codecs: Codecs) -> None:
        super().__init__()
        self._codecs = codecs

    def _dumps(self, obj: Any) -> bytes:
        return self._codecs.encode_state(obj)

    def _loads(self, s: bytes) -> Any:
        return self._codecs.decode_state(s)


def state_value_type(codecs: Codecs) -> type:
    """A `value_type` for faust.Table: Faust takes the codec from `_options.serializer`
    and rebuilds values with `from_data`; ours are already PersonState objects."""

    class PersonStateValue:
        _options = SimpleNamespace(serializer=StateCodec(codecs))

        @classmethod
        def from_data(cls, data: Any, preferred_type: Any = None) -> Any:
            return data

    return PersonStateValue


def dead_letter_headers(message: Any, rejected: Rejected) -> list[tuple[str, bytes]]:
    """Kafka Connect's DLQ header convention, plus touchflow's reason code."""
    return [
        ("__connect.errors.topic", message.topic.encode()),
        ("__connect.errors.partition", str(message.partition).encode()),
        ("__connect.errors.offset", str(message.offset).encode()),
        ("__connect.errors.exception.class.name", b"touchflow.Rejected"),
        ("__connect.errors.exception.message", rejected.message.encode()[:1000]),
        ("touchflow.reason", rejected.reason.value.encode()),
    ]


@dataclass
class Segmentation:
    """Topics and table of the segmentation agent, declared on one app."""

    events: faust.TopicT
    changes: faust.TopicT
    dlq: faust.TopicT
    table: faust.Table


def register(app: faust.App, settings: Settings, codecs: Codecs) -> Segmentation:
    raw = {"key_serializer": "raw", "value_serializer": "raw", "partitions": settings.partitions}
    seg = Segmentation(
        events=app.topic(settings.events_topic, **raw),
        changes=app.topic(settings.changes_topic, **raw),
        dlq=app.topic(settings.dlq_topic, **raw),
        table=app.Table(
            TABLE_NAME,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=state_value_type(codecs),
        ),
    )
    policy = settings.policy()
    limits = settings.limits()

    async def segmentation(stream: faust.StreamT) -> None:
        async for event in stream.events():
            m = event.message
            try:
                tp = accept(m.value, int(time.time() * 1000), codecs, limits)
            except Rejected as rejected:
                await seg.dlq.send(
                    key=m.key, value=m.value, headers=dead_letter_headers(m, rejected)
                )
                continue
            person_id = person_id_for(tp.user)
            key = core.state_key(tp.brand, person_id).encode()
            old = seg.table.get(key)
            if old is not None and m.offset <= old.last_offset:
                continue  # redelivered after a restart: its effects are already in the state
            new, changes = core.apply(old, tp, person_id, policy, m.offset)
            seg.table[key] = new
            for change in changes:
                await seg.changes.send(
                    key=change.person_id.encode(), value=codecs.encode_change(change)
                )

    app.agent(seg.events, name="segmentation")(segmentation)
    return seg
