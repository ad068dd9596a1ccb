"""Consumer settings Faust does not expose: its worker consumer hard-codes
`fetch_max_wait_ms=1500`.

Apache Kafka answers a fetch as soon as `fetch.min.bytes` (1 byte) is there, so the wait
only matters on an idle partition. Tansu holds every fetch for the whole wait even when
records are waiting (docs/benchmarks.md, "Latency"), so each hop of the pipeline waited up
to 1.5 s: p99 at 500 ev/s was ~4 s, ~0.9 s at 200 ms (throughput did not change).
`Settings.consumer_fetch_max_wait_ms` sets it (200 ms by default on Tansu).
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


class TunedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            # Read by AIOKafkaConsumer.start() when it builds its Fetcher.
            consumer._fetch_max_wait_ms = wait_ms
        return consumer
