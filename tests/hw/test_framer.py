# amaranth: UnusedElaboratable=no
"""The framer (``hw/framer.py``): random headers and payloads, with random idle cycles
on both inputs and random backpressure on the bytes, come out as exactly the bytes
``encode_frame`` makes of them, and the frame parser reads back what went in.
"""

import random

import pytest
from amaranth import Elaboratable, Module
from amaranth.lib.wiring import connect
from harness import consumer, producer, simulate
from streams import StreamStalls, stream_get

from hw.frame_parser import FrameParser
from hw.framer import Framer
from hw.link_protocol import MAX_PAYLOAD, SEQUENCE_MODULUS, Frame, FrameType, encode_frame


def random_frames(rng, count):
    return [Frame(rng.choice(list(FrameType)), rng.randrange(SEQUENCE_MODULUS),
                  rng.randbytes(rng.choice([0, 1, 8, rng.randrange(MAX_PAYLOAD + 1),
                                            MAX_PAYLOAD])))
            for _ in range(count)]


def headers(frames):
    return [{"type": f.type, "seq": f.seq, "length": len(f.payload)} for f in frames]


@pytest.mark.parametrize("probability", [0.2, 0.6])
def test_framer_bytes_equal_encode_frame(probability):
    rng = random.Random(int(10 * probability))
    frames = random_frames(rng, 12)
    expected = b"".join(encode_frame(f.type, f.seq, f.payload) for f in frames)
    dut = Framer()
    sent = []
    simulate(dut,
             producer(dut.header, headers(frames), seed=1, probability=probability),
             producer(dut.payload, b"".join(f.payload for f in frames), seed=2,
                      probability=probability),
             consumer(dut.bytes, len(expected), sent, seed=3, probability=probability))
    assert bytes(sent) == expected


class FramerToParser(Elaboratable):
    def __init__(self):
        self.framer = Framer()
        self.parser = FrameParser(timeout_cycles=64)

    def elaborate(self, platform):
        m = Module()
        m.submodules.framer, m.submodules.parser = self.framer, self.parser
        connect(m, self.framer.bytes, self.parser.bytes)
        return m


def test_framer_to_parser():
    rng = random.Random(5)
    frames = random_frames(rng, 10)
    dut = FramerToParser()
    got = []

    async def take(ctx):
        stalls = StreamStalls(seed=6, probability=0.3)
        for _ in frames:
            header = await stream_get(ctx, dut.parser.header, stalls)
            payload = bytes([await stream_get(ctx, dut.parser.payload, stalls)
                             for _ in range(header.length)])
            got.append(Frame(FrameType(header.type), header.seq, payload))

    simulate(dut,
             producer(dut.framer.header, headers(frames), seed=7),
             producer(dut.framer.payload, b"".join(f.payload for f in frames), seed=8),
             take)
    assert got == frames
