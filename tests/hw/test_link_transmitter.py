# amaranth: UnusedElaboratable=no
"""The link transmitter (``hw/link_transmitter.py``): data-out beats offered with random
idle cycles leave in RESULTS frames (random backpressure on the frames' header and
payload), each kept until the host acknowledges it; a host ACK of the frame before sends
the frame again, cut to the host's limit, and the ring moves on by the length the host
says it holds; ACKs carry the credits, STATUS answers the record."""

import pytest
from harness import producer, simulate
from streams import StreamStalls, stream_get

from hw.config import NpuConfig
from hw.link_protocol import (
    ACK_FIELDS,
    STATUS_BYTES,
    STATUS_FIELDS,
    FrameType,
    unpack_fields,
)
from hw.link_transmitter import LinkTransmitter

CONFIG = NpuConfig(rows=2, cols=2, data_bytes=2)


async def strobe(ctx, dut, name, **values):
    for key, value in values.items():
        ctx.set(getattr(dut, key), value)
    ctx.set(getattr(dut, name), 1)
    await ctx.tick()
    ctx.set(getattr(dut, name), 0)


@pytest.mark.parametrize("probability", [0.0, 0.4])
def test_results_are_kept_until_acknowledged(probability):
    data = bytes((7 * i + 3) % 256 for i in range(600))
    beats = [int.from_bytes(data[i:i + 2], "little") for i in range(0, len(data), 2)]
    dut = LinkTransmitter(config=CONFIG)
    received = bytearray()
    frames = []

    async def host(ctx):
        stalls = StreamStalls(seed=9, probability=probability)
        ctx.set(dut.results_limit, 256)
        ctx.set(dut.status.expected, 1)
        ctx.set(dut.status.commands_credit, 256)
        ctx.set(dut.status.data_credit, 1024)
        lost_once = False
        while len(received) < len(data):
            header = await stream_get(ctx, dut.header, stalls)
            payload = bytes([await stream_get(ctx, dut.payload, stalls)
                             for _ in range(header.length)])
            frames.append((FrameType(header.type), header.seq, payload))
            if header.type != FrameType.RESULTS:
                continue
            if header.seq == 1 and not lost_once:
                # As if frame 1 were lost: ask for it again, in frames of at most 100.
                lost_once = True
                ctx.set(dut.results_limit, 100)
                await strobe(ctx, dut, "host_ack", host_ack_seq=0, host_ack_length=0)
                continue
            received.extend(payload)
            await strobe(ctx, dut, "host_ack", host_ack_seq=header.seq,
                         host_ack_length=len(payload))

    simulate(dut, producer(dut.data_out, beats, seed=8, probability=probability), host)
    assert bytes(received) == data
    results = [(seq, len(payload)) for kind, seq, payload in frames
               if kind == FrameType.RESULTS]
    # Frame 1 sent whole, then again cut to the new limit; the rest at most 100 bytes.
    assert results[0] == (0, 256)
    assert results[1] == (1, 256) and results[2] == (1, 100)
    assert all(length <= 100 for _, length in results[2:])
    assert [seq for seq, _ in results[2:]] == list(range(1, len(results) - 1))
    # The first acknowledgement: the full credits (grown from nothing at reset).
    acks = [payload for kind, _, payload in frames if kind == FrameType.ACK]
    assert acks and unpack_fields(ACK_FIELDS, acks[0])["data_credit"] == 1024


def test_ack_and_status_answers():
    dut = LinkTransmitter(config=CONFIG)
    frames = []

    async def host(ctx):
        for name, value in (("expected", 9), ("commands_credit", 200), ("data_credit", 700),
                            ("executed", 12345), ("crc_errors", 3), ("frames", 8)):
            ctx.set(getattr(dut.status, name), value)
        await strobe(ctx, dut, "nak")
        await strobe(ctx, dut, "status_request", request_seq=42)
        for _ in range(2):
            header = await stream_get(ctx, dut.header)
            payload = bytes([await stream_get(ctx, dut.payload)
                             for _ in range(header.length)])
            frames.append((FrameType(header.type), header.seq, payload))

    simulate(dut, host)
    (ack_type, ack_seq, ack), (status_type, status_seq, status) = frames
    assert (ack_type, ack_seq) == (FrameType.ACK, 8)
    assert unpack_fields(ACK_FIELDS, ack) == {"commands_credit": 200, "data_credit": 700,
                                              "nak": 1}
    assert (status_type, status_seq, len(status)) == (FrameType.STATUS, 42, STATUS_BYTES)
    record = unpack_fields(STATUS_FIELDS, status)
    assert (record["executed"], record["crc_errors"], record["frames"],
            record["expected"], record["results_pending"]) == (12345, 3, 8, 9, 0)


def test_transmitter_wrong():
    with pytest.raises(ValueError, match="results_room must be a power of two of at least "
                                         "512 bytes, not 600"):
        LinkTransmitter(config=CONFIG, results_room=600)
    with pytest.raises(TypeError, match="results_room must be an integer number of bytes"):
        LinkTransmitter(config=CONFIG, results_room="1k")
