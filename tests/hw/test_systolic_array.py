# amaranth: UnusedElaboratable=no
"""The systolic array against NumPy matrix products.

Verifies ``hw/systolic_array.py`` on 1x1, 2x3, 3x2 and 4x4 arrays: random weight
tiles (loaded bottom row first) and random activation streams over the whole 9-bit
operand range give result rows equal to ``a @ W``, with every tag leaving in the
order it came; ``act_in`` and ``weight_in`` see random idle cycles and ``result``
random backpressure; ``weight_in.ready`` stays low while any accepted vector has
not left as a result (so a tile change never corrupts rows in flight), and the
result stream keeps ``valid`` and its payload until taken.
"""

import numpy as np
import pytest
from amaranth import unsigned
from harness import Monitor, consumer, elements, simulate
from streams import StreamStalls, stream_put

from hw.config import NpuConfig
from hw.systolic_array import SystolicArray

SHAPES = [(1, 1), (2, 3), (3, 2), (4, 4)]
OPERANDS = (-256, 256)


def _config(rows, cols):
    return NpuConfig(rows=rows, cols=cols, act_depth=16, weight_tiles=1, acc_depth=16,
                     data_bytes=4)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_systolic_array_computes_a_times_w(shape):
    rows, cols = shape
    dut = SystolicArray(config=_config(rows, cols), tag_shape=unsigned(8))
    rng = np.random.default_rng(rows * 10 + cols)
    tiles = []
    for _ in range(3):
        w = rng.integers(*OPERANDS, (rows, cols))
        a = rng.integers(*OPERANDS, (int(rng.integers(1, 9)), rows))
        tiles.append((w, a, rng.integers(0, 256, len(a))))
    expected = [(list(row), int(tag))
                for w, a, tags in tiles for row, tag in zip(a @ w, tags, strict=True)]

    async def driver(ctx):
        weight_stalls, act_stalls = StreamStalls(seed=1), StreamStalls(seed=2)
        for w, a, tags in tiles:
            for row in w[::-1]:                    # bottom row first
                await stream_put(ctx, dut.weight_in, [int(v) for v in row], weight_stalls)
            for vector, tag in zip(a, tags, strict=True):
                await stream_put(ctx, dut.act_in, {"values": [int(v) for v in vector],
                                                   "tag": int(tag)}, act_stalls)

    contended = []

    async def weights_refused_in_flight(ctx):
        in_flight = 0
        async for _, _, *v in ctx.tick().sample(
                dut.act_in.valid, dut.act_in.ready, dut.result.valid, dut.result.ready,
                dut.weight_in.valid, dut.weight_in.ready):
            act_valid, act_ready, res_valid, res_ready, w_valid, w_ready = v
            if in_flight:
                assert not w_ready, f"weight_in ready with {in_flight} vectors in flight"
                if w_valid:
                    contended.append(in_flight)
            in_flight += (act_valid and act_ready) - (res_valid and res_ready)

    results = []
    monitor = Monitor({"result": dut.result})
    simulate(dut, driver, consumer(dut.result, len(expected), results, seed=3, probability=0.5),
             background=[weights_refused_in_flight, monitor.process])
    got = [([int(v) for v in elements(r.values)], int(r.tag)) for r in results]
    assert got == expected
    assert contended, "no weight tile was offered while vectors were in flight"


def test_systolic_array_config_wrong():
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        SystolicArray(config=None)
