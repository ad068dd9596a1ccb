"""The partitions a fetch may return: Faust's active set, where empty means none.

Why (the restart stall, docs/reliability.md): Faust (0.15) hands its *live* set of active
partitions to aiokafka's `Fetcher.fetched_records(partitions)`, which waits in the consumer
thread and filters with `if partitions and tp not in partitions`: an **empty** set means
*every* partition. A recovery empties Faust's set for a moment: at its end it pauses the
changelog partitions while the stream partitions are still paused. A fetch waiting then
returned the stream partitions' records and advanced their positions; Faust dropped them
(the partitions were not active); and when those records had been fetched after the
recovery's seek to the committed offsets, nothing sought back. The worker reported ready
and never processed the events that had arrived during its join and recovery (seen: in
3 of ~11 restarts under load; the dump showed aiokafka at the log end, Faust's read offsets
at the committed ones, nothing buffered).

`FetchablePartitions` keeps the live set (a partition Faust resumes while a fetch waits is
served in that fetch, as before) and only takes away the "empty means all".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any


class FetchablePartitions:
    """A live view of Faust's active partitions that is never "all partitions".

    aiokafka only asks `bool(partitions)` and `tp in partitions`."""

    __slots__ = ("_active",)

    def __init__(self, active: Set[Any]) -> None:
        self._active = active

    def __bool__(self) -> bool:
        return True  # an empty view still filters: it lets nothing through

    def __contains__(self, tp: object) -> bool:
        return tp in self._active

    def __repr__(self) -> str:
        return f"FetchablePartitions({self._active!r})"


def fetchable(active: Set[Any] | None) -> FetchablePartitions | None:
    """What to pass to the fetch for Faust's `active` set (None, a client-only app: all)."""
    return None if active is None else FetchablePartitions(active)


def dropped_stream_records(
    fetched: Mapping[Any, Sequence[Any]],
    active: Set[Any],
    buffered: Set[Any],
    is_changelog: Callable[[Any], bool],
) -> dict[Any, tuple[int, int, int]]:
    """The stream partitions of a fetch whose records Faust's `getmany` drops, as
    (first offset, last offset, count): those neither active nor buffered (its own filter).

    With `FetchablePartitions` there should be none while the generation and the flow
    stay the same: a fetch only returns active partitions, and Faust pauses a stream
    partition only when a rebalance starts (whose recovery seeks it back). A dropped
    record is never fetched again, so the worker logs any it sees (agents.bulk_delivery).
    Changelog partitions are left out: Faust pauses them when a recovery has read them,
    and the next recovery seeks them."""
    return {
        tp: (records[0].offset, records[-1].offset, len(records))
        for tp, records in fetched.items()
        if records and tp not in active and tp not in buffered and not is_changelog(tp)
    }
