# amaranth: UnusedElaboratable=no
"""The matmul sequencer against the request sequence a MATMUL implies.

Verifies ``hw/matmul_unit.py``: for random commands, the unit requests the slot's
weight rows bottom first (``slot * rows + rows - 1`` down to ``slot * rows``), then
``count`` activation vectors from ``act_addr`` tagged with accumulator rows from
``acc_addr`` and the command's ``accumulate`` bit; no activation request of a
command comes before its last weight request; and after its last activation
request it takes no further command until ``drained`` has been seen high.  The
command stream sees random idle cycles, both request streams random backpressure,
and ``drained`` stays low for a random while after each request (and flickers),
as a datapath with things in flight would hold it; both request streams hold their
payloads until taken.
"""

import random

import pytest
from harness import Monitor, consumer, producer, simulate

from hw.config import NpuConfig
from hw.matmul_unit import MatmulUnit

CONFIGS = [NpuConfig(rows=3, cols=2, act_depth=16, weight_tiles=3, acc_depth=12),
           NpuConfig(rows=1, cols=4, act_depth=8, weight_tiles=2, acc_depth=32)]


def _commands(config, rng, count=12):
    commands = []
    for _ in range(count):
        n = rng.randint(1, min(config.act_depth, config.acc_depth, 5))
        commands.append({"act_addr": rng.randint(0, config.act_depth - n), "count": n,
                         "slot": rng.randrange(config.weight_tiles),
                         "acc_addr": rng.randint(0, config.acc_depth - n),
                         "accumulate": rng.randrange(2)})
    return commands


def _expected(config, commands):
    rows, sequence = config.rows, []
    for c in commands:
        sequence += [("weights", c["slot"] * rows + rows - 1 - i) for i in range(rows)]
        sequence += [("acts", c["act_addr"] + i, c["acc_addr"] + i, c["accumulate"])
                     for i in range(c["count"])]
    return sequence


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"rows{c.rows}")
def test_matmul_unit_request_order_and_drain(config):
    rng = random.Random(config.rows)
    dut = MatmulUnit(config=config)
    commands = _commands(config, rng)
    blocked = []

    async def datapath_model(ctx):
        """Holds drained low for a while after every request, flickering at random; checks
        that no command is taken between a command's last request and a drained cycle."""
        quiet, pending, commands_taken, acts_taken = 0, False, 0, 0
        async for _, _, *v in ctx.tick().sample(
                dut.cmd.valid, dut.cmd.ready, dut.weight_requests.valid,
                dut.weight_requests.ready, dut.act_requests.valid, dut.act_requests.ready,
                dut.drained):
            cmd, weight, act = v[0] and v[1], v[2] and v[3], v[4] and v[5]
            if v[6]:
                pending = False
            elif pending and v[0]:
                blocked.append(commands_taken)
            if cmd:
                assert not pending, "a command was taken before the datapath drained"
                commands_taken += 1
            if act:
                acts_taken += 1
                pending = acts_taken == sum(c["count"] for c in commands[:commands_taken])
            quiet = rng.randint(1, 6) if (weight or act) else max(quiet - 1, 0)
            ctx.set(dut.drained, quiet == 0 and rng.random() < 0.7)

    monitor = Monitor({"weights": dut.weight_requests, "acts": dut.act_requests})
    simulate(dut, producer(dut.cmd, commands, seed=1),
             consumer(dut.weight_requests, config.rows * len(commands), [], seed=2,
                      probability=0.5),
             consumer(dut.act_requests, sum(c["count"] for c in commands), [], seed=3,
                      probability=0.5),
             background=[datapath_model, monitor.process])
    log = [(name, p.addr) if name == "weights" else (name, p.addr, p.tag.addr, p.tag.accumulate)
           for _, name, p, _ in monitor.log]
    assert log == _expected(config, commands)
    assert blocked, "no command ever waited for the datapath to drain"


def test_matmul_unit_config_wrong():
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        MatmulUnit(config=None)
