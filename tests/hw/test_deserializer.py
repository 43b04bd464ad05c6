# amaranth: UnusedElaboratable=no
"""The vector deserializer against the byte streams it was fed.

Verifies ``hw/deserializer.py`` with 1-, 3- and 8-byte beats: commands
``{length, count}`` for every length from 1 to ``vector_bytes`` (shuffled, with a
longest vector followed by a short one) assemble vectors equal to their bytes with
every byte from ``length`` up zero, even where the last beat carried other bytes or
a longer earlier vector left stale ones; exactly ``ceil(length / data_bytes)`` beats
are taken per vector, so data of a later command is not eaten (the beat after the
last command stays in the stream, with ``beats.ready`` low).  Commands, beats and
vectors all see random stalls, and ``vectors`` holds its payload until taken.
"""

import random
from math import ceil

import pytest
from harness import Monitor, as_bytes, consumer, producer, simulate

from hw.config import NpuConfig
from hw.deserializer import VectorDeserializer

CONFIGS = [
    NpuConfig(rows=4, cols=4, data_bytes=1),     # vector_bytes 16
    NpuConfig(rows=20, cols=2, data_bytes=3),    # vector_bytes 20, last beat partly used
    NpuConfig(rows=2, cols=17, data_bytes=8),    # vector_bytes 17
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.vector_bytes}B-{c.data_bytes}")
def test_deserializer_assembles_exact_vectors(config):
    rng = random.Random(config.data_bytes)
    dut = VectorDeserializer(config=config)
    vb, db = config.vector_bytes, config.data_bytes
    lengths = list(range(1, vb + 1))
    rng.shuffle(lengths)
    lengths += [vb, 1, vb, db]                     # stale bytes of a longer vector
    commands = [{"length": n, "count": rng.randint(1, 3)} for n in lengths]

    beats, expected = [], []
    for cmd in commands:
        for _ in range(cmd["count"]):
            vector = bytes(rng.randrange(256) for _ in range(cmd["length"]))
            nbeats = ceil(len(vector) / db)
            # Bytes past the vector's end in its last beat are garbage, to be dropped.
            padded = vector + bytes(rng.randrange(1, 256) for _ in range(nbeats * db - len(vector)))
            beats += [int.from_bytes(padded[i * db:(i + 1) * db], "little") for i in range(nbeats)]
            expected.append(vector + bytes(vb - len(vector)))
    extra_beat = int.from_bytes(bytes(range(1, db + 1)), "little")

    vectors = []
    monitor = Monitor({"beats": dut.beats, "vectors": dut.vectors})
    receive = consumer(dut.vectors, len(expected), vectors, seed=3)

    send = producer(dut.beats, beats, seed=2)

    async def send_then_offer_one_more(ctx):
        await send(ctx)
        ctx.set(dut.beats.payload, extra_beat)
        ctx.set(dut.beats.valid, 1)

    async def receive_then_check_idle(ctx):
        await receive(ctx)
        await ctx.tick().until(~dut.busy)
        # Only the beats the commands needed were taken; the next one waits.
        assert not ctx.get(dut.beats.ready)
        assert ctx.get(dut.beats.valid)

    simulate(dut, producer(dut.cmd, commands, seed=1), send_then_offer_one_more,
             receive_then_check_idle, background=[monitor.process])
    assert [as_bytes(v, vb) for v in vectors] == expected
    assert monitor.transfers("beats") == beats


def test_deserializer_config_wrong():
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        VectorDeserializer(config={"data_bytes": 8})
