# amaranth: UnusedElaboratable=no
"""The data-out skid buffer: every payload once, in order, at full throughput, with a
registered ``ready``.

Verifies ``hw/skid_buffer.py``: random payloads through random idle cycles on the
input and random backpressure on the output (the monitor checks that the output
holds its payload until taken); with neither, one payload a cycle; and the input's
``ready`` never follows the output's ``ready`` within a cycle.
"""

import random

import pytest
from harness import Monitor, consumer, producer, simulate

from hw.skid_buffer import LATENCY, SkidBuffer


@pytest.mark.parametrize("probability", [0.2, 0.6])
def test_skid_buffer_passes_every_payload_in_order(probability):
    rng = random.Random(3)
    dut = SkidBuffer(shape=16)
    payloads = [rng.randrange(1 << 16) for _ in range(300)]
    got = []
    monitor = Monitor({"input": dut.input, "output": dut.output})
    simulate(dut, producer(dut.input, payloads, seed=1, probability=probability),
             consumer(dut.output, len(payloads), got, seed=2, probability=probability),
             background=[monitor.process])
    assert got == payloads
    # The skid register was used: the input moved in a cycle the output stalled.
    moved = {name: [edge for edge, n, _, _ in monitor.log if n == name]
             for name in ("input", "output")}
    assert set(moved["input"]) - set(moved["output"])


def test_skid_buffer_full_throughput():
    dut = SkidBuffer(shape=8)
    payloads = list(range(1, 41))
    got = []
    monitor = Monitor({"input": dut.input, "output": dut.output})
    simulate(dut, producer(dut.input, payloads, seed=1, probability=0),
             consumer(dut.output, len(payloads), got, seed=2, probability=0),
             background=[monitor.process])
    assert got == payloads
    edges = [edge for edge, n, _, _ in monitor.log if n == "output"]
    assert edges == list(range(edges[0], edges[0] + len(payloads)))
    first_in = min(edge for edge, n, _, _ in monitor.log if n == "input")
    assert edges[0] == first_in + LATENCY


def test_skid_buffer_ready_is_registered():
    dut = SkidBuffer(shape=8)
    rng = random.Random(5)
    seen = []

    async def testbench(ctx):
        for cycle in range(200):
            ctx.set(dut.input.valid, rng.random() < 0.7)
            ctx.set(dut.input.payload, cycle & 0xFF)
            ctx.set(dut.output.ready, 0)
            stalled = ctx.get(dut.input.ready)
            ctx.set(dut.output.ready, 1)
            assert ctx.get(dut.input.ready) == stalled, f"cycle {cycle}"
            ctx.set(dut.output.ready, rng.random() < 0.5)
            seen.append(stalled)
            await ctx.tick()

    simulate(dut, testbench)
    assert 0 in seen and 1 in seen


@pytest.mark.parametrize("shape", [None, "8", 2.5])
def test_skid_buffer_shape_wrong(shape):
    with pytest.raises(TypeError, match="^shape must be shape-castable") as info:
        SkidBuffer(shape=shape)
    assert str(info.value).endswith(f", not {shape!r}")
