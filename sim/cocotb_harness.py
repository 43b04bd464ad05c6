"""cocotb drivers, monitor and harness for the Npu's generated Verilog.

Structured as in cocotb's matrix_multiplier example and cocotbext-axi: a
:class:`StreamSource` drives each input stream, a :class:`StreamSink` monitors
the output stream, and :class:`NpuHarness` resets the chip, runs a command
stream and collects what came out.  Every stream gets random idle cycles or
backpressure when ``stall_probability`` is non-zero.

Sampling follows cocotb's timing model: at ``RisingEdge(clk)`` signals still hold
the values they had just before the edge, so ``valid and ready`` read there is
the transfer that edge performs.  One coroutine steps every stream, which keeps
Python overhead per simulated cycle low.
"""

import json
import os
import random

from hw.config import NpuConfig

__all__ = ["StreamSource", "StreamSink", "NpuHarness", "config_from_environment"]


def config_from_environment():
    """The NpuConfig the runner built the Verilog for (``NPU_CONFIG``)."""
    return NpuConfig(**json.loads(os.environ["NPU_CONFIG"]))


def _port(dut, name):
    return getattr(dut, name)


class StreamSource:
    """Offers a list of integers on a valid/ready stream, with random idle cycles.

    Once ``valid`` is raised it stays up until the item is taken, as the stream
    protocol requires.
    """

    def __init__(self, dut, prefix, items, *, rng, stall_probability=0.0):
        self.valid = _port(dut, f"{prefix}__valid")
        self.ready = _port(dut, f"{prefix}__ready")
        self.payload = _port(dut, f"{prefix}__payload")
        self.width = len(self.payload)
        self.items = list(items)
        self.index = 0
        self.offering = False
        self.rng = rng
        self.stall_probability = stall_probability
        self.valid.value = 0

    @property
    def done(self):
        return self.index >= len(self.items)

    def step(self):
        """Called at each rising edge: account for the transfer, offer the next item."""
        if self.offering and int(self.ready.value):
            self.index += 1
            self.offering = False
        if not self.offering:
            if self.done or (self.stall_probability
                             and self.rng.random() < self.stall_probability):
                self.valid.value = 0
                return
            self.payload.value = self.items[self.index]
            self.valid.value = 1
            self.offering = True


class StreamSink:
    """Takes beats from a valid/ready stream, with random backpressure."""

    def __init__(self, dut, prefix, *, rng, stall_probability=0.0):
        self.valid = _port(dut, f"{prefix}__valid")
        self.ready = _port(dut, f"{prefix}__ready")
        self.payload = _port(dut, f"{prefix}__payload")
        self.width = len(self.payload)
        self.beats = []
        self.rng = rng
        self.stall_probability = stall_probability
        self.accepting = False
        self.ready.value = 0

    def step(self):
        if self.accepting and int(self.valid.value):
            self.beats.append(self.payload.value.to_unsigned())
        self.accepting = not (self.stall_probability
                              and self.rng.random() < self.stall_probability)
        self.ready.value = int(self.accepting)

    def data(self):
        nbytes = self.width // 8
        return b"".join(b.to_bytes(nbytes, "little") for b in self.beats)


class NpuHarness:
    """Drives an ``npu`` toplevel: clock, reset, streams and status ports.

    Parameters
    ----------
    dut
        The cocotb handle of the toplevel.
    config : NpuConfig
        The configuration the Verilog was generated for; the stream widths are
        read from the DUT and checked against it.
    """

    CLOCK_PERIOD_NS = 10

    def __init__(self, dut, config=None):
        self.dut = dut
        self.config = config if config is not None else config_from_environment()
        width = len(dut.data_in__payload)
        if width != self.config.data_width:
            raise ValueError(f"the DUT's data_in is {width} bits wide, the config says "
                             f"{self.config.data_width}")
        self._clock_started = False

    async def reset(self):
        import cocotb
        from cocotb.clock import Clock
        from cocotb.triggers import RisingEdge
        dut = self.dut
        if not self._clock_started:
            cocotb.start_soon(Clock(dut.clk, self.CLOCK_PERIOD_NS, unit="ns").start())
            self._clock_started = True
        dut.commands__valid.value = 0
        dut.data_in__valid.value = 0
        dut.data_out__ready.value = 0
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    def status(self):
        from hw.isa import StatusRecord
        dut = self.dut
        return StatusRecord(error=dut.error.value.to_unsigned(),
                            error_opcode=dut.error_opcode.value.to_unsigned(),
                            commands=dut.executed.value.to_unsigned())

    async def run(self, commands, data_in=b"", *, stall_probability=0.0, seed=0,
                  max_idle_cycles=100_000):
        """Push ``commands`` and ``data_in``; return the data-out bytes once the chip is idle.

        Raises
        ------
        TimeoutError
            If the chip makes no progress for ``max_idle_cycles`` cycles.
        """
        from cocotb.triggers import RisingEdge
        dut, beat = self.dut, self.config.data_bytes
        if len(data_in) % beat:
            raise ValueError(f"data_in must be whole {beat}-byte beats, not {len(data_in)} bytes")
        rng = random.Random(seed)
        sources = [
            StreamSource(dut, "commands", [int(c) for c in commands], rng=rng,
                         stall_probability=stall_probability),
            StreamSource(dut, "data_in", [int.from_bytes(data_in[i:i + beat], "little")
                                          for i in range(0, len(data_in), beat)],
                         rng=rng, stall_probability=stall_probability),
        ]
        sink = StreamSink(dut, "data_out", rng=rng, stall_probability=stall_probability)
        start_executed = dut.executed.value.to_unsigned()
        target = (start_executed + len(sources[0].items)) & 0xFFFF_FFFF
        idle = 0
        progress = (0, 0, 0)
        while True:
            await RisingEdge(dut.clk)
            for source in sources:
                source.step()
            sink.step()
            if (sources[0].done and dut.executed.value.to_unsigned() == target
                    and not int(dut.busy.value) and not int(dut.data_out__valid.value)):
                break
            now = (sources[0].index, sources[1].index, len(sink.beats))
            idle = 0 if now != progress else idle + 1
            progress = now
            if idle > max_idle_cycles:
                raise TimeoutError(f"the chip made no progress for {max_idle_cycles} cycles: "
                                   f"{now[0]} commands, {now[1]} data beats in, "
                                   f"{now[2]} beats out, status {self.status()}")
        for source in sources:
            source.valid.value = 0
        sink.ready.value = 0
        return sink.data()
