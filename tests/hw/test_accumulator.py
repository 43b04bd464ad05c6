# amaranth: UnusedElaboratable=no
"""The accumulator buffer against a NumPy model of its rows.

Verifies ``hw/accumulator.py``: rounds of random result rows (overwrite or
accumulate, values over the whole int32 range so that sums wrap) followed by reads
of every row in random order.  Runs of results to one row are accumulated 1, 2 and
3 cycles apart, closer than the read-modify-write pipeline writes a row
(``WRITE_LATENCY``), which only its forwarding gets right (the test checks that
updates at each of these distances really happened).  ``busy`` must cover every
row in the pipeline: the reads start once it is low.
Reads return each row of the model with its tag, in order.  ``results`` sees
random idle cycles, ``read_requests`` random idle cycles and ``read_responses``
random backpressure; responses hold their payload until taken.
"""

import random

import numpy as np
import pytest
from amaranth import unsigned
from harness import Monitor, elements, simulate, wait_for, wrap
from streams import StreamStalls, stream_get, stream_put

from hw.accumulator import WRITE_LATENCY, AccumulatorBuffer
from hw.config import NpuConfig

CONFIGS = [NpuConfig(rows=2, cols=3, acc_depth=8), NpuConfig(rows=1, cols=1, acc_depth=4)]
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _value(rng):
    return rng.choice([INT32_MIN, INT32_MAX, rng.randint(INT32_MIN, INT32_MAX),
                       rng.randint(-100, 100)])


def _rounds(config, rng, count=3):
    """Per round: the results to write and the reads (addr, tag) that follow."""
    rounds = []
    for _ in range(count):
        results = []
        while len(results) < 24:
            addr = rng.randrange(config.acc_depth)
            burst = rng.choice([1, 1, 2, 4])     # runs to one row, accumulating
            for i in range(burst):
                accumulate = int(i > 0 or rng.random() < 0.5)
                results.append({"values": [_value(rng) for _ in range(config.cols)],
                                "tag": {"addr": addr, "accumulate": accumulate}})
        reads = [{"addr": a, "tag": rng.randrange(16)}
                 for a in rng.sample(range(config.acc_depth), config.acc_depth)]
        rounds.append((results, reads))
    return rounds


def _model(config, rounds):
    """Expected read responses per round, and how many sums wrapped."""
    acc = np.zeros((config.acc_depth, config.cols), dtype=object)
    expected, wrapped = [], 0
    for results, reads in rounds:
        for r in results:
            row = r["tag"]["addr"]
            for c, v in enumerate(r["values"]):
                total = acc[row, c] + v if r["tag"]["accumulate"] else v
                wrapped += total != wrap(total, 32)
                acc[row, c] = wrap(total, 32)
        expected.append([([int(v) for v in acc[q["addr"]]], q["tag"]) for q in reads])
    return expected, wrapped


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"cols{c.cols}-depth{c.acc_depth}")
def test_accumulator_overwrites_accumulates_and_reads(config):
    rng = random.Random(config.cols)
    dut = AccumulatorBuffer(config=config, read_tag_shape=unsigned(4))
    rounds = _rounds(config, rng)
    expected, wrapped = _model(config, rounds)
    assert wrapped > 0
    state = {"written": 0, "read": 0}
    got = []

    async def writer(ctx):
        stalls = StreamStalls(seed=1, probability=0.2)
        for i, (results, _) in enumerate(rounds):
            await wait_for(ctx, lambda i=i: state["read"] == i)
            for r in results:
                await stream_put(ctx, dut.results, r, stalls)
            await ctx.tick().until(~dut.busy)
            state["written"] = i + 1

    async def requester(ctx):
        stalls = StreamStalls(seed=2)
        for i, (_, reads) in enumerate(rounds):
            await wait_for(ctx, lambda i=i: state["written"] == i + 1)
            for q in reads:
                await stream_put(ctx, dut.read_requests, q, stalls)

    async def reader(ctx):
        stalls = StreamStalls(seed=3, probability=0.5)
        for i, (_, reads) in enumerate(rounds):
            responses = [await stream_get(ctx, dut.read_responses, stalls) for _ in reads]
            got.append([([int(v) for v in elements(r.data)], r.tag) for r in responses])
            state["read"] = i + 1

    monitor = Monitor({"results": dut.results, "responses": dut.read_responses})
    simulate(dut, writer, requester, reader, background=[monitor.process])
    assert got == expected
    # Accumulations of one row happened 1, 2 and 3 cycles after a result to that row,
    # with no result to it in between: each distance the forwarding covers.
    writes = [(edge, payload.tag) for edge, name, payload, _ in monitor.log if name == "results"]
    distances = set()
    for i, (e2, t2) in enumerate(writes):
        earlier = [e1 for e1, t1 in writes[:i] if t1.addr == t2.addr]
        if t2.accumulate and earlier:
            distances.add(e2 - earlier[-1])
    assert {1, 2, WRITE_LATENCY} <= distances


def test_accumulator_config_wrong():
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        AccumulatorBuffer(config="8x8")
