# amaranth: UnusedElaboratable=no
"""The memory reader against the memory's known contents.

Verifies ``hw/memory_reader.py``: a random stream of tagged addresses, with random
idle cycles on ``requests`` and random backpressure on ``responses``, reads a
``lib.memory.Memory`` initialised with random words; every response carries the
word at its address and the tag of its request, in request order, and keeps
``valid`` and its payload while it is held back (the read port is not enabled
then).  Memories of one word (no address bits) and of several words are covered.
"""

import random

import pytest
from amaranth import Elaboratable, Module, unsigned
from amaranth.lib import data, memory, wiring
from harness import Monitor, consumer, producer, simulate

from hw.memory_reader import MemoryReader

WORD = data.StructLayout({"low": 7, "high": unsigned(9)})


class ReaderBench(Elaboratable):
    def __init__(self, addr_width, init):
        self.memory = memory.Memory(shape=WORD, depth=len(init), init=init)
        self.reader = MemoryReader(addr_width=addr_width, shape=WORD, tag_shape=unsigned(5))

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = self.memory
        m.submodules.reader = self.reader
        wiring.connect(m, self.reader.port, self.memory.read_port())
        return m


@pytest.mark.parametrize("addr_width", [0, 3, 5])
def test_memory_reader_returns_addressed_words_in_order(addr_width):
    rng = random.Random(addr_width)
    depth = 1 << addr_width
    init = [{"low": rng.randrange(128), "high": rng.randrange(512)} for _ in range(depth)]
    bench = ReaderBench(addr_width, init)
    reader = bench.reader
    requests = [{"addr": rng.randrange(depth), "tag": rng.randrange(32)} for _ in range(150)]
    # Runs of the same address, too.
    requests += [{"addr": depth - 1, "tag": t} for t in range(5)]

    responses = []
    monitor = Monitor({"responses": reader.responses})
    simulate(bench, producer(reader.requests, requests, seed=addr_width),
             consumer(reader.responses, len(requests), responses, seed=addr_width + 100,
                      probability=0.5),
             background=[monitor.process])
    assert [(r.data.low, r.data.high, r.tag) for r in responses] == [
        (init[q["addr"]]["low"], init[q["addr"]]["high"], q["tag"]) for q in requests]


@pytest.mark.parametrize("addr_width", [-1, "3", None])
def test_memory_reader_addr_width_wrong(addr_width):
    with pytest.raises(TypeError, match="addr_width must be a non-negative integer"):
        MemoryReader(addr_width=addr_width, shape=8)
