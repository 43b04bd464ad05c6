# amaranth: UnusedElaboratable=no
"""The store sequencer against the read requests a STORE implies.

Verifies ``hw/store_unit.py``: for random commands (every row count up to the
accumulator, every column count, raw and requantized), the unit requests rows
``acc_addr .. acc_addr + count - 1`` in order, each tagged with the command's
``raw`` bit and column count ``n``, and nothing else.  The command stream sees
random idle cycles and the request stream random backpressure, holding its
payload until taken; the unit goes idle with no request left over.  In every cycle
``current_end`` is ``acc_addr + count`` of ``current`` (what the controller compares).
"""

import random

import pytest
from harness import Monitor, consumer, producer, simulate

from hw.config import NpuConfig
from hw.store_unit import StoreUnit

CONFIGS = [NpuConfig(rows=2, cols=3, acc_depth=10), NpuConfig(rows=2, cols=1, acc_depth=1)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"cols{c.cols}-depth{c.acc_depth}")
def test_store_unit_requests_rows_in_order(config):
    rng = random.Random(config.acc_depth)
    dut = StoreUnit(config=config)
    commands = []
    for _ in range(15):
        count = rng.randint(1, config.acc_depth)
        commands.append({"acc_addr": rng.randint(0, config.acc_depth - count), "count": count,
                         "n": rng.randint(1, config.cols), "raw": rng.randrange(2)})
    expected = [(c["acc_addr"] + i, c["raw"], c["n"]) for c in commands for i in range(c["count"])]
    requests = []
    receive = consumer(dut.read_requests, len(expected), requests, seed=2, probability=0.5)

    async def receive_then_check_idle(ctx):
        await receive(ctx)
        assert not ctx.get(dut.read_requests.valid), "a request beyond the last row"
        await ctx.tick().until(~dut.busy)

    ends = set()

    async def check_end(ctx):
        async for _ in ctx.tick():
            current = ctx.get(dut.current)
            assert ctx.get(dut.current_end) == current.acc_addr + current.count
            ends.add(ctx.get(dut.current_end))

    monitor = Monitor({"read_requests": dut.read_requests})
    simulate(dut, producer(dut.cmd, commands, seed=1), receive_then_check_idle,
             background=[monitor.process, check_end])
    assert [(r.addr, r.tag.raw, r.tag.n) for r in requests] == expected
    assert {c["acc_addr"] + c["count"] for c in commands} <= ends   # followed every command


def test_store_unit_config_wrong():
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        StoreUnit(config=None)
