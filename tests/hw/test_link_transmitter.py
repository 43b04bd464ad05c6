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


def test_status_answer_is_consistent_while_counters_move():
    # Every cycle the moving fields step by one in each of their bytes (k * 0x0101...),
    # so a field read torn (bytes of different cycles) has unequal bytes; ``busy``
    # follows k's lowest bit, so a snapshot field taken at another instant than
    # ``executed`` disagrees with it.  The payload must hold still while it waits.
    dut = LinkTransmitter(config=CONFIG)
    step = {"value": 0}
    records = []
    moving32 = ("executed", "cycles", "array_cycles")
    moving16 = ("frames", "crc_errors", "retransmissions")

    async def mover(ctx):
        while True:
            k = min(step["value"], 255)
            for name in moving32:
                ctx.set(getattr(dut.status, name), k * 0x01010101)
            for name in moving16:
                ctx.set(getattr(dut.status, name), k * 0x0101)
            ctx.set(dut.status.busy, k & 1)
            await ctx.tick()
            step["value"] += 1

    unsteady = []

    async def watch_payload(ctx):
        # Sampled at each clock edge: what the edge saw.
        waiting = None
        async for _, _, valid, ready, payload in ctx.tick().sample(
                dut.payload.valid, dut.payload.ready, dut.payload.payload):
            if waiting is not None and (not valid or payload != waiting):
                unsteady.append((waiting, valid, payload))
            waiting = payload if valid and not ready else None

    async def host(ctx):
        stalls = StreamStalls(seed=5, probability=0.5)
        ctx.set(dut.status.expected, 1)
        ctx.set(dut.status.commands_credit, 256)
        ctx.set(dut.status.data_credit, 1024)
        for request in range(3):
            step["value"] = 10 + 60 * request
            requested_at = step["value"]
            await strobe(ctx, dut, "status_request", request_seq=request)
            while True:
                header = await stream_get(ctx, dut.header, stalls)
                held = []
                payload = bytearray()
                for _ in range(header.length):
                    payload.append(await stream_get(ctx, dut.payload, stalls))
                    held.append(step["value"])
                if header.type == FrameType.STATUS:
                    records.append((requested_at, held[-1], bytes(payload)))
                    break

    simulate(dut, host, background=[mover, watch_payload])
    assert len(records) == 3 and not unsteady
    for requested_at, finished_at, payload in records:
        record = unpack_fields(STATUS_FIELDS, payload)
        steps = {}
        for name in (*moving32, *moving16):
            raw = record[name].to_bytes(4 if name in moving32 else 2, "little")
            assert len(set(raw)) == 1, f"{name} torn: {raw.hex()}"
            steps[name] = raw[0]
        assert requested_at <= steps["executed"] <= min(finished_at, 255)
        assert record["busy"] == steps["executed"] & 1
        # Counters read after the snapshot, in the record's order.
        order = [steps[name] for name in ("executed", "cycles", "array_cycles", "frames",
                                          "crc_errors", "retransmissions")]
        assert order == sorted(order) and order[-1] > order[0]
