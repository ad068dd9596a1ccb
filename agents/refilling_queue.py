"""Stream buffers that, once full, take the fetch loop's next message only after they
have drained to Faust's own resume mark, not as soon as one slot is free.

Why: Faust's fetch loop puts each message on its stream's buffer (a mode
`ThrowableQueue`, 4 096 messages by default). While the worker is behind, the buffer is
full, and an asyncio queue frees one slot per item taken: the agent took one, the fetch
loop put one, found the buffer full again, and waited again, for every message. Each of
those waits costs Faust and mode a few tasks (Faust's `_handle_full` under
`asyncio.wait`, mode's `wait_first`; agents.fast_delivery only spares the deliveries that
do not wait). In a throughput run 7 272 of 91 000 deliveries waited like this, ~10 % of
the worker's samples (docs/benchmarks.md).

Once full, this buffer reports itself full until it has drained to
`pressure_drop_size` (40 % of its size: where Faust resumes fetching a partition it
paused for pressure), and wakes a waiting put only then. The fetch loop then waits once
and delivers the next ~2 400 messages without waiting. Below the full mark nothing
changes; the agent always has at least the resume mark's worth of messages to take.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from mode.utils.queues import ThrowableQueue


class RefillingQueue(ThrowableQueue):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refilling = False  # was full, and has not drained to the resume mark since

    def full(self) -> bool:
        if self._refilling and self.qsize() > self.pressure_drop_size:
            return True
        self._refilling = bool(super().full())
        return self._refilling

    def _wakeup_next(self, waiters: deque[Any]) -> None:
        # asyncio wakes a waiting put on every item taken; while refilling it would only
        # find the queue full and wait again.
        if waiters is self._putters and self.full():
            return
        super()._wakeup_next(waiters)
