# amaranth: UnusedElaboratable=no
"""The load unit against the golden model's buffers and parameter registers.

Verifies ``hw/load_unit.py`` with real activation and weight memories that start
full of random stale values.  After every load the memories, read back through the
simulator, and the parameter registers equal those of ``sim.golden.GoldenNpu``
fed the same command and bytes:

* ``ACT``: uint8 and int8 widening, random addresses, counts and lengths;
* ``WEIGHT``: int8 and uint8 minus each column's weight zero point, wrapped to
  9 bits (``sim.golden.widen_weights``), lanes from ``n`` up zero and rows from
  ``k`` up zeroed without taking data;
* ``PARAMS``: valid records written from column 0; a record with shift 0 or
  rounding 3 (while no mode) raises ``param_error`` (one pulse per invalid record) and neither it
  nor any later record of the command is written once the error is latched; with
  ``error_latched`` high from the start nothing is written at all.

The deserializer is modelled: each command must first ask it for
``{length, count}`` (checked), then gets its vectors, zero past ``length`` as the
real one sends them.  ``cmd`` and ``vectors`` see random idle cycles and the
deserializer request random backpressure.
"""

from dataclasses import dataclass

import numpy as np
import pytest
from amaranth import Elaboratable, Module, signed
from amaranth.lib import data, memory, wiring
from harness import Monitor, elements, invalidated, simulate, wait_for
from streams import StreamStalls, stream_get, stream_put

from hw import isa
from hw.beats import pack_rows
from hw.config import OPERAND_WIDTH, PARAM_RECORD_BYTES, NpuConfig
from hw.isa import ParamRecord
from hw.load_unit import LoadKind, LoadUnit
from sim.golden import GoldenNpu

CONFIGS = [
    NpuConfig(rows=3, cols=5, act_depth=8, weight_tiles=2, acc_depth=4, data_bytes=4),
    NpuConfig(rows=4, cols=2, act_depth=6, weight_tiles=3, acc_depth=4, data_bytes=8),
]
PARAM_NAMES = [f.name for f in isa.PARAM_FIELDS if not f.name.startswith("reserved")]


class LoadBench(Elaboratable):
    """The load unit writing into activation and weight memories of random contents."""

    def __init__(self, config, act_init, weight_init):
        operand = signed(OPERAND_WIDTH)
        self.act_memory = memory.Memory(shape=data.ArrayLayout(operand, config.rows),
                                        depth=config.act_depth, init=act_init)
        self.weight_memory = memory.Memory(shape=data.ArrayLayout(operand, config.cols),
                                           depth=config.weight_depth, init=weight_init)
        self.unit = LoadUnit(config=config)

    def elaborate(self, platform):
        m = Module()
        m.submodules.act_memory = self.act_memory
        m.submodules.weight_memory = self.weight_memory
        m.submodules.unit = self.unit
        wiring.connect(m, self.unit.act_write, self.act_memory.write_port())
        wiring.connect(m, self.unit.weight_write, self.weight_memory.write_port())
        return m


@dataclass
class Step:
    """One load: the instruction, its vectors (rows of bytes) and whether an error is
    latched before it starts."""
    kind: LoadKind
    instruction: isa.Instruction
    vectors: np.ndarray
    latched: bool = False

    @property
    def command(self):
        i = self.instruction
        if self.kind == LoadKind.PARAMS:
            return {"kind": self.kind, "addr": 0, "count": i.count, "length": 0, "signed": 0,
                    "param_set": i.param_set}
        if self.kind == LoadKind.ACT:
            return {"kind": self.kind, "addr": i.addr, "count": i.count, "length": i.length,
                    "signed": i.signed}
        return {"kind": self.kind, "addr": i.slot, "count": i.k, "length": i.n,
                "signed": i.signed, "param_set": i.param_set}

    @property
    def request(self):
        """What the unit must ask the deserializer for."""
        length = PARAM_RECORD_BYTES if self.kind == LoadKind.PARAMS else self.command["length"]
        return {"length": length, "count": self.command["count"]}


def _params_step(rng, config, *, invalid=(), latched=False, count=None, extreme_zeros=False):
    count = config.cols if count is None else count
    records = []
    for c in range(count):
        weight_zero = (-256, 255)[c % 2] if extreme_zeros else int(rng.integers(-256, 256))
        record = ParamRecord(bias=int(rng.integers(-(1 << 31), 1 << 31)),
                             multiplier=int(rng.integers(0, 1 << 31)),
                             shift=int(rng.integers(1, 64)),
                             rounding=int(rng.choice(list(isa.Rounding))),
                             weight_zero=weight_zero,
                             output_zero=int(rng.integers(-256, 256)),
                             low=int(rng.integers(-256, 256)), high=int(rng.integers(-256, 256)))
        if c in invalid:
            record = invalidated(record, lambda ways: ways[rng.integers(len(ways))])
        records.append(np.frombuffer(record.encode(), np.uint8))
    return Step(LoadKind.PARAMS, isa.LoadParams(count=count, param_set=int(rng.integers(0, 2))),
                np.array(records), latched=latched)


def _act_step(rng, config):
    addr = int(rng.integers(0, config.act_depth))
    count = int(rng.integers(1, config.act_depth - addr + 1))
    length = int(rng.integers(1, config.rows + 1))
    signed_ = int(rng.integers(0, 2))
    return Step(LoadKind.ACT, isa.LoadAct(addr=addr, count=count, length=length, signed=signed_),
                rng.integers(0, 256, (count, length), dtype=np.uint8))


def _weight_step(rng, config):
    k, n = int(rng.integers(1, config.rows + 1)), int(rng.integers(1, config.cols + 1))
    slot, signed_ = int(rng.integers(0, config.weight_tiles)), int(rng.integers(0, 2))
    return Step(LoadKind.WEIGHT, isa.LoadWeight(slot=slot, k=k, n=n, signed=signed_,
                                                param_set=int(rng.integers(0, 2))),
                rng.integers(0, 256, (k, n), dtype=np.uint8))


def _steps(rng, config):
    # Extreme weight zero points first: most widened weights wrap around 9 bits.
    steps = [_params_step(rng, config, extreme_zeros=True)]
    for _ in range(3):
        steps += [_act_step(rng, config), _weight_step(rng, config)]
    steps += [_weight_step(rng, config),
              _params_step(rng, config, count=max(1, config.cols - 1)),
              _weight_step(rng, config),
              # An invalid record in the middle: it and later valid ones are not written.
              _params_step(rng, config, invalid={config.cols // 2}),
              _params_step(rng, config, invalid={0}),
              # Error latched before the command: nothing is written, errors still pulse.
              _params_step(rng, config, latched=True),
              _params_step(rng, config, invalid={config.cols - 1}, latched=True),
              _weight_step(rng, config), _act_step(rng, config)]
    return steps


def _check_state(ctx, bench, golden, config):
    act = [elements(ctx.get(bench.act_memory.data[i])) for i in range(config.act_depth)]
    weights = [elements(ctx.get(bench.weight_memory.data[i])) for i in range(config.weight_depth)]
    assert act == golden.act.tolist()
    assert weights == golden.weights.reshape(config.weight_depth, config.cols).tolist()
    params = ctx.get(bench.unit.params)
    for param_set in range(2):
        for name in PARAM_NAMES:
            assert [getattr(params[param_set][c], name) for c in range(config.cols)] == \
                golden.params[param_set][name].tolist(), (param_set, name)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.rows}x{c.cols}")
def test_load_unit_matches_golden_buffers(config):
    rng = np.random.default_rng(config.rows)
    act_init = rng.integers(-256, 256, (config.act_depth, config.rows))
    weight_init = rng.integers(-256, 256, (config.weight_depth, config.cols))
    bench = LoadBench(config, act_init.tolist(), weight_init.tolist())
    unit = bench.unit
    golden = GoldenNpu(config)
    golden.act[:] = act_init
    golden.weights[:] = weight_init.reshape(golden.weights.shape)
    steps = _steps(rng, config)
    request = {"latch": False, "clear": False}
    pulses = []     # one entry per cycle with param_error high

    async def controller_model(ctx):
        """Latches param_error into error_latched, as the controller does; latches or
        clears it on request."""
        latched = False
        async for _, _, param_error in ctx.tick().sample(unit.param_error):
            if param_error:
                pulses.append(param_error)
            latched = (latched or param_error or request["latch"]) and not request["clear"]
            request["latch"] = request["clear"] = False
            ctx.set(unit.error_latched, latched)

    async def ask_controller(ctx, what):
        request[what] = True
        await wait_for(ctx, lambda: not request[what])

    async def deserializer_model(ctx):
        request_stalls, vector_stalls = StreamStalls(seed=2, probability=0.5), StreamStalls(seed=3)
        for step in steps:
            asked = await stream_get(ctx, unit.deserializer, request_stalls)
            assert {"length": asked.length, "count": asked.count} == step.request
            for vector in step.vectors:
                padded = list(vector) + [0] * (config.vector_bytes - len(vector))
                await stream_put(ctx, unit.vectors, padded, vector_stalls)

    async def driver(ctx):
        stalls = StreamStalls(seed=1)
        for step in steps:
            if step.latched:
                await ask_controller(ctx, "latch")
            await stream_put(ctx, unit.cmd, step.command, stalls)
            await ctx.tick().until(~unit.busy)
            # With an error latched beforehand the state must not change at all (the
            # golden model would not even run the command).
            if not step.latched:
                golden.run([step.instruction.encode()], pack_rows(config, step.vectors))
            _check_state(ctx, bench, golden, config)
            if golden.error or step.latched:      # CLEAR_ERROR
                golden.run([isa.ClearError().encode()])
                await ask_controller(ctx, "clear")

    monitor = Monitor({"cmd": unit.cmd, "deserializer": unit.deserializer,
                       "vectors": unit.vectors})
    simulate(bench, driver, deserializer_model, background=[controller_model, monitor.process])
    invalid = sum(not ParamRecord.decode(v.tobytes()).valid
                  for step in steps if step.kind == LoadKind.PARAMS for v in step.vectors)
    assert len(pulses) == invalid == 3


def test_load_unit_config_wrong():
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        LoadUnit(config=None)

