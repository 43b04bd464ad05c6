"""cocotb test module that runs one command stream for :meth:`sim.rtl.RtlSimulation.run_program`.

The program comes from ``NPU_PROGRAM`` (an ``.npz`` of commands and data-in) and
the result goes to ``NPU_RESULT``.
"""

import os

import cocotb
import numpy as np

from sim.cocotb_harness import NpuHarness


@cocotb.test()
async def run_program(dut):
    program = np.load(os.environ["NPU_PROGRAM"])
    harness = NpuHarness(dut)
    await harness.reset()
    data_out = await harness.run(
        [int(c) for c in program["commands"]], program["data_in"].tobytes(),
        stall_probability=float(os.environ.get("NPU_STALL_PROBABILITY", "0")),
        seed=int(os.environ.get("COCOTB_RANDOM_SEED", "0") or 0))
    status = harness.status()
    np.savez(os.environ["NPU_RESULT"],
             data_out=np.frombuffer(data_out, dtype=np.uint8),
             error=status.error, error_opcode=status.error_opcode, executed=status.commands,
             cycles=dut.cycles.value.to_unsigned(),
             array_cycles=dut.array_cycles.value.to_unsigned())
