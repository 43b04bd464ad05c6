"""cocotb test module behind :class:`sim.rtl.RtlSession`: one simulated chip serving runs.

The session listens on a loopback TCP port (``NPU_SERVER_PORT``); this test
connects, then for each request line ``{"program": path, "result": path, ...}``
runs the program's ``.npz`` (commands, data-in) on the chip, writes the result
``.npz`` and answers ``{"ok": true}``.  A ``{"quit": true}`` request ends the
simulation.  The chip is reset once, so its state persists between runs.
"""

import json
import os
import socket

import cocotb
import numpy as np

from sim.cocotb_harness import NpuHarness


@cocotb.test()
async def serve(dut):
    harness = NpuHarness(dut)
    await harness.reset()
    with socket.create_connection(("127.0.0.1", int(os.environ["NPU_SERVER_PORT"]))) as conn:
        requests = conn.makefile("r")
        for line in requests:
            request = json.loads(line)
            if request.get("quit"):
                break
            try:
                program = np.load(request["program"])
                start_cycles = dut.cycles.value.to_unsigned()
                start_array = dut.array_cycles.value.to_unsigned()
                data_out = await harness.run(
                    [int(c) for c in program["commands"]], program["data_in"].tobytes(),
                    stall_probability=float(request.get("stall_probability", 0.0)),
                    seed=int(request.get("seed", 0)),
                    max_idle_cycles=int(request.get("max_idle_cycles", 100_000)))
                status = harness.status()
                np.savez(request["result"], data_out=np.frombuffer(data_out, dtype=np.uint8),
                         error=status.error, error_opcode=status.error_opcode,
                         executed=status.commands,
                         cycles=(dut.cycles.value.to_unsigned() - start_cycles) & 0xFFFF_FFFF,
                         array_cycles=(dut.array_cycles.value.to_unsigned() - start_array)
                         & 0xFFFF_FFFF)
                answer = {"ok": True}
            except Exception as exc:  # reported to the host, which raises it
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            conn.sendall((json.dumps(answer) + "\n").encode())
