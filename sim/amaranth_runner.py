"""Runs command streams on the Npu in Amaranth's Python simulator."""

import random

import numpy as np
from amaranth.sim import Simulator

from hw.config import NpuConfig
from hw.isa import StatusRecord
from hw.npu import Npu

__all__ = ["AmaranthRun", "run_amaranth"]


class AmaranthRun:
    """Outcome of :func:`run_amaranth`."""

    def __init__(self, data_out, status, cycles, array_cycles):
        self.data_out = data_out
        self.status = status
        self.cycles = cycles
        self.array_cycles = array_cycles


def run_amaranth(config, commands, data_in=b"", *, stall_probability=0.0, seed=0,
                 trace=None, max_idle_cycles=100_000):
    """Push ``commands`` and ``data_in`` into a fresh simulated Npu and collect data-out.

    Parameters
    ----------
    stall_probability : float
        Chance per transfer of random idle cycles on each input stream and of
        backpressure on the output stream.
    trace : str, optional
        Write a VCD waveform to this path.
    max_idle_cycles : int
        Give up (RuntimeError) after this many cycles without progress.
    """
    if not isinstance(config, NpuConfig):
        raise TypeError(f"config must be an NpuConfig, not {config!r}")
    dut = Npu(config=config)
    commands = [int(c) for c in commands]
    beat_bytes = config.data_bytes
    if len(data_in) % beat_bytes:
        raise ValueError(f"data_in must be whole {beat_bytes}-byte beats, "
                         f"not {len(data_in)} bytes")
    beats = [int.from_bytes(data_in[i:i + beat_bytes], "little")
             for i in range(0, len(data_in), beat_bytes)]
    out_beats = []
    result = {}

    def stalled(rng):
        return stall_probability and rng.random() < stall_probability

    async def push(ctx, stream, items, seed_offset):
        rng = random.Random(seed + seed_offset)
        for item in items:
            while stalled(rng):
                ctx.set(stream.valid, 0)
                await ctx.tick()
            ctx.set(stream.valid, 1)
            ctx.set(stream.payload, item)
            await ctx.tick().until(stream.ready)
        ctx.set(stream.valid, 0)

    async def commands_tb(ctx):
        await push(ctx, dut.commands, commands, 1)

    async def data_tb(ctx):
        await push(ctx, dut.data_in, beats, 2)

    async def monitor(ctx):
        rng = random.Random(seed + 3)
        idle = 0
        while True:
            ready = not stalled(rng)
            ctx.set(dut.data_out.ready, ready)
            await ctx.tick()
            # Values just before the edge: was a beat transferred?
            valid = ctx.get(dut.data_out.valid)
            if valid and ready:
                out_beats.append(ctx.get(dut.data_out.payload))
            done = (ctx.get(dut.executed) == len(commands) and not ctx.get(dut.busy)
                    and not valid)
            if done:
                break
            idle += 1
            if idle > max_idle_cycles:
                raise RuntimeError("the simulated Npu made no progress")
        result["status"] = StatusRecord(error=ctx.get(dut.error),
                                        error_opcode=ctx.get(dut.error_opcode),
                                        commands=ctx.get(dut.executed))
        result["cycles"] = ctx.get(dut.cycles)
        result["array_cycles"] = ctx.get(dut.array_cycles)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(commands_tb, background=True)
    sim.add_testbench(data_tb, background=True)
    sim.add_testbench(monitor)
    if trace:
        with sim.write_vcd(trace):
            sim.run()
    else:
        sim.run()
    data_out = b"".join(b.to_bytes(beat_bytes, "little") for b in out_beats)
    return AmaranthRun(data_out, result["status"], result["cycles"], result["array_cycles"])
