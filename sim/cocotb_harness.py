"""cocotb adapter of the host loop and harness for the Npu's generated Verilog.

:class:`NpuHarness` resets the chip and runs command streams on it: at each
``RisingEdge(clk)`` it samples the chip's ports, hands them to
:class:`sim.host_loop.HostLoop` and drives what the loop says.  Every stream gets
pauses (idle cycles on the inputs, backpressure on the output) from the loop's pause
generators, random when ``stall_probability`` is non-zero.

Sampling follows cocotb's timing model: at ``RisingEdge(clk)`` signals still hold
the values they had just before the edge, so ``valid and ready`` read there is
the transfer that edge performs, as the loop's contract expects.  To keep Python
overhead per simulated cycle low, the adapter reads only the ports the loop will
look at and writes only the ports whose value changes.
"""

import json
import os

from hw.beats import from_beats, to_beats
from hw.config import NpuConfig
from hw.isa import StatusRecord
from sim.host_loop import RESET_EDGES, HostLoop, RunTimeout, counter_difference, stream_pauses
from sim.run_result import RunResult

__all__ = ["NpuHarness", "config_from_environment"]


def config_from_environment():
    """The NpuConfig the runner built the Verilog for (``NPU_CONFIG``)."""
    return NpuConfig(**json.loads(os.environ["NPU_CONFIG"]))


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
        """The contract's reset (:mod:`sim.host_loop`): every stream idle, ``rst`` high for
        ``RESET_EDGES`` rising edges, then low for one (the clock starts on the first)."""
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
        for _ in range(RESET_EDGES):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    def status(self):
        dut = self.dut
        return StatusRecord(error=dut.error.value.to_unsigned(),
                            error_opcode=dut.error_opcode.value.to_unsigned(),
                            commands=dut.executed.value.to_unsigned())

    async def run(self, commands, data_in=b"", *, stall_probability=0.0, seed=0,
                  commands_pause=None, data_in_pause=None, data_out_pause=None,
                  max_idle_cycles=100_000):
        """Push ``commands`` and ``data_in``; return what came out once the chip is idle.

        The options are those of :meth:`sim.amaranth_runner.AmaranthSession.run`.

        Returns
        -------
        RunResult
            With the chip's own cycle counts (``cycles_measured`` is True).

        Raises
        ------
        TimeoutError
            If the chip makes no progress for ``max_idle_cycles`` cycles.
        """
        from cocotb.triggers import RisingEdge
        dut, config = self.dut, self.config
        pauses = stream_pauses(stall_probability=stall_probability, seed=seed,
                               commands_pause=commands_pause, data_in_pause=data_in_pause,
                               data_out_pause=data_out_pause)
        start_cycles = dut.cycles.value.to_unsigned()
        start_array = dut.array_cycles.value.to_unsigned()
        loop = HostLoop(commands=commands, data_in=to_beats(config, data_in),
                        executed=dut.executed.value.to_unsigned(), pauses=pauses,
                        max_idle_cycles=max_idle_cycles)
        commands_valid, commands_payload = dut.commands__valid, dut.commands__payload
        data_in_valid, data_in_payload = dut.data_in__valid, dut.data_in__payload
        commands_ready, data_in_ready = dut.commands__ready, dut.data_in__ready
        data_out_valid, data_out_ready = dut.data_out__valid, dut.data_out__ready
        data_out_payload, executed, busy = dut.data_out__payload, dut.executed, dut.busy
        # What each driven port holds now: a port is written only when its value changes.
        driven = [None] * 5

        def drive():
            if loop.commands_valid != driven[0]:
                commands_valid.value = driven[0] = loop.commands_valid
            if loop.commands_payload != driven[1]:
                commands_payload.value = driven[1] = loop.commands_payload
            if loop.data_in_valid != driven[2]:
                data_in_valid.value = driven[2] = loop.data_in_valid
            if loop.data_in_payload != driven[3]:
                data_in_payload.value = driven[3] = loop.data_in_payload
            if loop.data_out_ready != driven[4]:
                data_out_ready.value = driven[4] = loop.data_out_ready

        edge = RisingEdge(dut.clk)
        try:
            drive()
            done = False
            while not done:
                await edge
                out_valid = int(data_out_valid.value)
                status = loop.needs_status
                done = loop.step(
                    int(commands_ready.value) if loop.commands_valid else None,
                    int(data_in_ready.value) if loop.data_in_valid else None,
                    out_valid,
                    data_out_payload.value.to_unsigned()
                    if out_valid and loop.data_out_ready else None,
                    executed.value.to_unsigned() if status else None,
                    int(busy.value) if status else None)
                drive()
        except RunTimeout as timeout:
            timeout.result = loop.partial_result(config, self.status())
            raise
        finally:
            loop.stop()
            drive()
        array_cycles = counter_difference(dut.array_cycles.value.to_unsigned(), start_array)
        return RunResult(
            data_out=from_beats(config, loop.data_out), status=self.status(),
            cycles=counter_difference(dut.cycles.value.to_unsigned(), start_cycles),
            cycles_measured=True, array_cycles=array_cycles,
            array_macs=array_cycles * config.rows * config.cols,
            data_in_used=loop.data_in_taken * config.data_bytes)
