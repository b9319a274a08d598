"""`python -m herald.bench.ledger`: the senders' delivery ledger alone, against Cassandra.

Two measurements, each printing Cassandra's CPU (read from its process) per row or per
delivery, and asserting nothing:

- **batch sizes**: conditional batches of n new ledger rows (one Paxos v2 round each) on
  three ledger partitions, n from 1 to 96: Cassandra µs per row and ms per round. A
  round's fixed cost is what makes small batches dear.
- **trickle**: deliveries arriving three at a time at `--rate` per second, each claimed,
  held 30 ms (the provider call) and finished, through `CassandraLedger` with each
  `--linger` pair (claim ms / finish ms): Cassandra µs per delivery and the claim's
  latency, i.e. what lingering buys and costs when rounds would carry few rows.

Rows go to the real ledger table under minutes far from now (they expire with its TTL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Iterator

import psutil
from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from herald.bench.sampler import cpu_seconds, listener_pid
from infra import cql_bind
from infra.cassandra import aexecute, connect
from infra.settings import CassandraSettings
from senders.ledger import TABLE, CassandraLedger, LedgerOutcome, Ref, State

SLOTS = 3


def _scratch_minute() -> int:
    # Decades from now: never a minute a real delivery is filed under.
    return 60_000_000 + random.randrange(1_000_000)


@contextlib.contextmanager
def _cassandra_cpu(proc: psutil.Process | None, out: list[float]) -> Iterator[None]:
    before = cpu_seconds(proc)
    yield
    out.append(cpu_seconds(proc) - before)


async def _rounds(
    session: Session,
    claim: PreparedStatement,
    partition: tuple[int, int],
    rows: int,
    count: int,
    took: list[float],
) -> None:
    """`count` conditional batches of `rows` new rows, one after the other."""
    for _ in range(count):
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for _ in range(rows):
            cql_bind.add(batch, claim, (*partition, uuid.uuid4().hex, "bench"))
        started = time.perf_counter()
        await aexecute(session, batch)
        took.append(time.perf_counter() - started)


async def _delivery(ledger: CassandraLedger, ref: Ref, waits: list[float]) -> None:
    """Claimed, sent (30 ms), finished: the ledger's part of one delivery."""
    started = time.perf_counter()
    if await ledger.claim(ref, "bench", 1, "bench", "null") is not None:
        raise RuntimeError(f"a new delivery {ref} was already claimed")
    waits.append(time.perf_counter() - started)
    await asyncio.sleep(0.03)  # the provider call
    await ledger.finish(ref, "bench", LedgerOutcome(State.SENT, provider="null"))


async def batch_sizes(session: Session, proc: psutil.Process | None, rows: int) -> None:
    claim = session.prepare(
        f"INSERT INTO {TABLE} (slot, minute, delivery_id, notification_id, state, attempt,"
        " owner, provider, updated_at) VALUES (?, ?, ?, ?, 'sending', 1, 'bench', 'null',"
        " toTimestamp(now())) IF NOT EXISTS"
    )
    print(f"{'rows/batch':>10} {'rounds':>7} {'ms/round':>9} {'cassandra µs/row':>17}")
    for n in (1, 4, 16, 32, 48, 64, 96):
        minute, rounds = _scratch_minute(), max(1, rows // n)
        took: list[float] = []
        cpu: list[float] = []

        with _cassandra_cpu(proc, cpu):
            await asyncio.gather(
                *(
                    _rounds(session, claim, (slot, minute), n, rounds // SLOTS or 1, took)
                    for slot in range(SLOTS)
                )
            )
        done = len(took) * n
        print(
            f"{n:>10} {len(took):>7} {1000 * sum(took) / len(took):>9.1f}"
            f" {1e6 * cpu[0] / done:>17,.0f}"
        )


async def trickle(
    session: Session,
    proc: psutil.Process | None,
    rate: float,
    seconds: float,
    lingers: list[tuple[float, float]],
) -> None:
    print(
        f"{'linger claim/finish ms':>22} {'deliveries/s':>12} {'cassandra µs/dlv':>16}"
        f" {'claim p50 ms':>12} {'claim p99 ms':>12}"
    )
    for claim_ms, finish_ms in lingers:
        ledger = CassandraLedger(session, linger_s=finish_ms / 1000, claim_linger_s=claim_ms / 1000)
        minute = _scratch_minute()
        waits: list[float] = []

        cpu: list[float] = []
        tasks: list[asyncio.Task[None]] = []
        started = time.perf_counter()
        with _cassandra_cpu(proc, cpu):
            while time.perf_counter() - started < seconds:
                tasks += [
                    asyncio.create_task(_delivery(ledger, Ref(uuid.uuid4().hex, k, minute), waits))
                    for k in range(SLOTS)
                ]
                await asyncio.sleep(SLOTS / rate)
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        waits.sort()
        print(
            f"{f'{claim_ms:g} / {finish_ms:g}':>22} {len(tasks) / elapsed:>12,.0f}"
            f" {1e6 * cpu[0] / len(tasks):>16,.0f} {1000 * waits[len(waits) // 2]:>12.1f}"
            f" {1000 * waits[int(len(waits) * 0.99)]:>12.1f}"
        )


def _lingers(text: str) -> list[tuple[float, float]]:
    pairs = []
    for item in text.split(","):
        claim, _, finish = item.partition("/")
        pairs.append((float(claim), float(finish or claim)))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=6000, help="rows per batch size")
    parser.add_argument("--rate", type=float, default=600, help="trickle: deliveries/s")
    parser.add_argument("--seconds", type=float, default=20, help="trickle: per linger pair")
    parser.add_argument(
        "--linger",
        default="0/0,10/10,25/25,0/50",
        help="trickle: claim/finish linger ms pairs, comma-separated",
    )
    parser.add_argument("--only", choices=("batch-sizes", "trickle"))
    args = parser.parse_args()
    settings = CassandraSettings()
    session = connect(settings)
    proc = None
    with contextlib.suppress(psutil.Error, TypeError):
        proc = psutil.Process(listener_pid(settings.port))
    if proc is None:
        print("Cassandra's process is not visible here: its CPU reads as 0")
    try:
        if args.only in (None, "batch-sizes"):
            asyncio.run(batch_sizes(session, proc, args.rows))
        if args.only in (None, "trickle"):
            asyncio.run(trickle(session, proc, args.rate, args.seconds, _lingers(args.linger)))
    finally:
        session.cluster.shutdown()


if __name__ == "__main__":
    main()
