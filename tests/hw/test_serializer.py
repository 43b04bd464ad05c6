# amaranth: UnusedElaboratable=no
"""The vector serializer against the vectors it was given.

Verifies ``hw/serializer.py`` with 1-, 3- and 8-byte beats: vectors of every
length from 1 to ``out_vector_bytes`` (shuffled, some entering at the edge where
the previous vector's last beat leaves) go out as exactly
``ceil(length / data_bytes)`` beats holding their bytes, with the rest of the last
beat zero even where the input vector carried other bytes past its length; nothing
more is offered once the last beat has gone.
``vectors`` sees random idle cycles, ``beats`` random backpressure, and the beat
stream holds its payload until taken.
"""

import random
from math import ceil

import pytest
from harness import Monitor, consumer, producer, simulate

from hw.config import NpuConfig
from hw.serializer import VectorSerializer

CONFIGS = [
    NpuConfig(rows=2, cols=1, data_bytes=1),     # out_vector_bytes 8
    NpuConfig(rows=2, cols=3, data_bytes=3),     # out_vector_bytes 12
    NpuConfig(rows=2, cols=5, data_bytes=8),     # out_vector_bytes 20
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.out_vector_bytes}B-{c.data_bytes}")
@pytest.mark.parametrize("stall_probability", [0.2, 0.6])
def test_serializer_sends_padded_beats(config, stall_probability):
    rng = random.Random(config.data_bytes)
    dut = VectorSerializer(config=config)
    ob, db = config.out_vector_bytes, config.data_bytes
    lengths = list(range(1, ob + 1)) * 2
    rng.shuffle(lengths)
    # Every input vector is full of nonzero bytes: those past `length` must not leave.
    vectors = [{"bytes": [rng.randrange(1, 256) for _ in range(ob)], "length": n}
               for n in lengths]
    expected = []
    for v in vectors:
        n = v["length"]
        padded = bytes(v["bytes"][:n]) + bytes(ceil(n / db) * db - n)
        expected += [int.from_bytes(padded[i:i + db], "little") for i in range(0, len(padded), db)]

    beats = []
    monitor = Monitor({"vectors": dut.vectors, "beats": dut.beats})
    receive = consumer(dut.beats, len(expected), beats, seed=2, probability=stall_probability)

    async def receive_then_check_idle(ctx):
        await receive(ctx)
        assert not ctx.get(dut.beats.valid), "a beat beyond the last vector"

    simulate(dut, producer(dut.vectors, vectors, seed=1, probability=stall_probability),
             receive_then_check_idle, background=[monitor.process])
    assert beats == expected
    # Back to back: a vector entered at the edge where its predecessor's last beat left.
    edges = {name: {edge for edge, n, _, _ in monitor.log if n == name}
             for name in ("vectors", "beats")}
    assert edges["vectors"] & edges["beats"]


def test_serializer_config_wrong():
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        VectorSerializer(config=8)
