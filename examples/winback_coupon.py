"""Win-back automation: when a customer's lifecycle becomes at_risk, issue a coupon.

    TOUCHFLOW_KAFKA_BOOTSTRAP=127.0.0.1:9092 python examples/winback_coupon.py \
        [--coupon-url http://coupons.internal/issue] [--from-beginning]

Prints one JSON line per coupon; with --coupon-url it also POSTs it there, with the change's
idempotency key so the coupon service can drop a repeat. A 5xx or a time-out raises, so
touchflow retries with back-off and finally dead-letters the change to
`<group>.dlq`; a 4xx is final (`Permanent`). See docs/automations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

import aiohttp

from pipeline.automation import ChangeConsumer, Filter, Permanent, idempotency_key
from pipeline.settings import Settings
from pipeline.state import SegmentChange

COUPON = "WINBACK-20"
AT_RISK = Filter(dimensions=frozenset({"lifecycle"}), to_values=frozenset({"at_risk"}))


async def main(args: argparse.Namespace) -> None:
    settings = Settings()
    if settings.embedded_broker:
        sys.exit("winback_coupon: set TOUCHFLOW_KAFKA_BOOTSTRAP to the broker's address")
    consumer = ChangeConsumer(
        settings,
        group=args.group or f"{settings.app_id}-winback-coupon",
        filters=AT_RISK,
        start_from="earliest" if args.from_beginning else "latest",
    )

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

        @consumer.handler
        async def issue_coupon(change: SegmentChange) -> None:
            coupon = {
                "brand": change.brand,
                "person_id": change.person_id,
                "coupon": COUPON,
                "idempotency_key": idempotency_key(change),
            }
            if args.coupon_url:
                headers = {"Idempotency-Key": coupon["idempotency_key"]}
                async with http.post(args.coupon_url, json=coupon, headers=headers) as response:
                    if 400 <= response.status < 500:
                        raise Permanent(f"coupon service: HTTP {response.status}")
                    response.raise_for_status()  # 5xx: retried
            print(json.dumps(coupon, sort_keys=True), flush=True)

        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await consumer.run(stop=stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", help="consumer group (default <app_id>-winback-coupon)")
    parser.add_argument("--coupon-url", help="POST each coupon here (default: print only)")
    parser.add_argument(
        "--from-beginning", action="store_true", help="a new group starts at the oldest change"
    )
    asyncio.run(main(parser.parse_args()))
