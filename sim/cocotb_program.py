"""cocotb test module behind :class:`sim.rtl.RtlSession`: one simulated chip serving runs.

The session listens on a loopback TCP port (``NPU_SERVER_PORT``); this test
connects, then for each request line ``{"program": path, "result": path, ...}``
runs the program's ``.npz`` (commands, data-in) on the chip, writes the
:class:`~sim.run_result.RunResult` as a ``.npz`` and answers ``{"ok": true}``.  A
``{"reset": true}`` request resets the chip (answered ``{"ok": true}``), a
``{"quit": true}`` request ends the simulation.  The chip is reset at the start and on
request only, so its state persists between runs.

The streams' pause values come from the host, which holds the pause generators:
a request names the paused streams (``"paused"``), and while the run consumes them
this module asks for more with ``{"pauses": n}``, answered by ``n`` values per named
stream as strings of ``0`` and ``1``.
"""

import json
import os
import socket
from collections import deque

import cocotb
import numpy as np

from sim.cocotb_harness import NpuHarness
from sim.host_loop import STREAMS

#: Pause values asked for at a time (per stream).
PAUSE_CHUNK = 4096


class _HostPauses:
    """Pause iterators whose values the host draws, fetched a chunk at a time."""

    def __init__(self, conn, answers, paused):
        self._conn, self._answers = conn, answers
        self._chunks = {name: deque() for name in paused}

    def _fetch(self):
        self._conn.sendall((json.dumps({"pauses": PAUSE_CHUNK}) + "\n").encode())
        values = json.loads(self._answers.readline())
        for name, chunk in self._chunks.items():
            chunk.append([value == "1" for value in values[name]])

    def stream(self, name):
        chunks = self._chunks[name]
        while True:
            if not chunks:
                self._fetch()
            yield from chunks.popleft()


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
            if request.get("reset"):
                await harness.reset()
                conn.sendall(b'{"ok": true}\n')
                continue
            try:
                program = np.load(request["program"])
                host = _HostPauses(conn, requests, request.get("paused", []))
                pauses = {f"{name}_pause": host.stream(name)
                          for name in STREAMS if name in request.get("paused", [])}
                result = await harness.run(
                    [int(c) for c in program["commands"]], program["data_in"].tobytes(),
                    max_idle_cycles=int(request.get("max_idle_cycles", 100_000)), **pauses)
                np.savez(request["result"], **result.as_arrays())
                answer = {"ok": True}
            except Exception as exc:  # reported to the host, which raises it
                answer = {"ok": False, "type": type(exc).__name__, "error": str(exc)}
                partial = getattr(exc, "result", None)
                if partial is not None:   # what a timed-out run produced before it stopped
                    np.savez(request["result"], **partial.as_arrays())
                    answer["partial"] = True
            conn.sendall((json.dumps(answer) + "\n").encode())
