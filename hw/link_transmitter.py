"""The link layer's send side: acknowledgements, status answers and the chip's data-out
bytes as frames (to :class:`hw.framer.Framer`), by the exchange rules of
:mod:`hw.link_protocol`."""

from amaranth import Cat, Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import check_config
from .link_protocol import (
    ACK_FIELDS,
    MAX_PAYLOAD,
    RESULTS_FLUSH_CYCLES,
    STATUS_BYTES,
    STATUS_FIELDS,
    STATUS_SNAPSHOT_FIELDS,
    FrameType,
    ack_layout,
    frame_header_layout,
    status_record_layout,
)

__all__ = ["LinkTransmitter"]

_ACK_BYTES = sum(f.width for f in ACK_FIELDS) // 8


def _status_fields():
    """(name, first bit, width) of every field of the STATUS record, in order."""
    fields, offset = [], 0
    for f in STATUS_FIELDS:
        fields.append((f.name, offset, f.width))
        offset += f.width
    # A field read live must be whole bytes on byte boundaries: a byte is then one field.
    assert all(start % 8 == 0 and width % 8 == 0 for name, start, width in fields
               if name not in STATUS_SNAPSHOT_FIELDS)
    return fields


class LinkTransmitter(wiring.Component):
    """Sends frames: an ``ACK`` first, then a ``STATUS`` answer, then ``RESULTS``.

    The chip's data-out beats are split into bytes and kept in a ring buffer of
    ``results_room`` bytes until the host acknowledges the ``RESULTS`` frame that carried
    them; one frame is unacknowledged at a time, and it is sent again when the host
    acknowledges the frame before it.  An acknowledgement is owed for every ``ack`` or
    ``nak`` (one is sent for any number owed) and when a credit has grown by
    :data:`MAX_PAYLOAD` bytes since the last one sent.

    Parameters
    ----------
    config : NpuConfig
    results_room : int
        Bytes of the ring buffer: a power of two, at least twice :data:`MAX_PAYLOAD`.

    Members
    -------
    data_out : In(stream.Signature(8 * data_bytes))
        From the chip.
    header : Out(stream.Signature(frame_header_layout()))
    payload : Out(stream.Signature(8))
        To the framer.
    status : In(status_record_layout())
        The status record's fields this component does not own (it fills in
        ``results_pending``, ``results_seq`` and ``results_waiting``); its
        ``expected`` minus one is the frame acknowledged, its credits go into each
        ``ACK``.  A ``STATUS`` answer takes
        :data:`hw.link_protocol.STATUS_SNAPSHOT_FIELDS` as it starts and every other
        field as its first byte leaves (the record is not kept whole: it would cost a
        flip-flop a bit).
    ack, nak, status_request, host_ack : In(1)
    host_ack_seq, request_seq : In(8)
    host_ack_length, results_limit : In(16)
        From :class:`hw.link_receiver.LinkReceiver`.
    retransmit : Out(1)
        One cycle for each ``RESULTS`` frame the host asked for again.
    idle : Out(1)
        Nothing to send until the host speaks.
    """

    def __init__(self, *, config, results_room=4 * MAX_PAYLOAD):
        check_config(config)
        if isinstance(results_room, bool) or not isinstance(results_room, int):
            raise TypeError(f"results_room must be an integer number of bytes, "
                            f"not {results_room!r}")
        if results_room < 2 * MAX_PAYLOAD or results_room & (results_room - 1):
            raise ValueError(f"results_room must be a power of two of at least "
                             f"{2 * MAX_PAYLOAD} bytes, not {results_room!r}")
        self.config = config
        self.results_room = results_room
        super().__init__({
            "data_out": In(stream.Signature(config.data_width)),
            "header": Out(stream.Signature(frame_header_layout())),
            "payload": Out(stream.Signature(8)),
            "status": In(status_record_layout()),
            "ack": In(1),
            "nak": In(1),
            "status_request": In(1),
            "host_ack": In(1),
            "host_ack_seq": In(8),
            "request_seq": In(8),
            "host_ack_length": In(16),
            "results_limit": In(16),
            "retransmit": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        room = self.results_room
        beat_bytes = self.config.data_bytes
        status = self.status

        # -- data-out beats into the ring, a byte per cycle ---------------------------
        m.submodules.ring = ring = memory.Memory(shape=8, depth=room, init=[])
        write = ring.write_port()
        read = ring.read_port()
        pointer = room.bit_length()     # one bit more than an address: full != empty
        written = Signal(pointer)       # next byte to write
        start = Signal(pointer)         # first byte not acknowledged
        count = Signal(range(room + 1))
        m.d.comb += count.eq(written - start)
        hold = Signal(self.config.data_width)
        hold_left = Signal(range(beat_bytes + 1))
        m.d.comb += self.data_out.ready.eq(hold_left == 0)
        with m.If(self.data_out.valid & self.data_out.ready):
            m.d.sync += [hold.eq(self.data_out.payload), hold_left.eq(beat_bytes)]
        quiet = Signal(range(RESULTS_FLUSH_CYCLES + 1), init=RESULTS_FLUSH_CYCLES)
        m.d.comb += [write.addr.eq(written), write.data.eq(hold[:8])]
        with m.If((hold_left != 0) & (count != room)):
            m.d.comb += write.en.eq(1)
            m.d.sync += [written.eq(written + 1), hold.eq(hold >> 8),
                         hold_left.eq(hold_left - 1), quiet.eq(0)]
        with m.Elif(quiet != RESULTS_FLUSH_CYCLES):
            m.d.sync += quiet.eq(quiet + 1)

        # -- the unacknowledged RESULTS frame ------------------------------------------
        seq = Signal(8)                 # of the next or unacknowledged RESULTS frame
        length = Signal(range(MAX_PAYLOAD + 1))  # of the unacknowledged frame, 0: none
        sent = Signal()                 # it was sent and waits for its acknowledgement
        resend = Signal()               # the host asked for it again
        early = Signal()                # acknowledged while being sent again
        early_length = Signal(range(MAX_PAYLOAD + 1))
        sending_results = Signal()
        limit = Signal(range(MAX_PAYLOAD + 1))
        m.d.comb += limit.eq(Mux(self.results_limit > MAX_PAYLOAD, MAX_PAYLOAD,
                                                                     self.results_limit))
        waiting = Signal()
        m.d.comb += waiting.eq((hold_left != 0) | self.data_out.valid)

        # The host's copy may be a longer first sending than the frame now (cut on
        # resending): it says how many bytes it holds, all from ``start``.
        acked_length = Signal(range(MAX_PAYLOAD + 1))
        m.d.comb += acked_length.eq(Mux(self.host_ack_length > MAX_PAYLOAD, MAX_PAYLOAD,
                                        self.host_ack_length))

        def complete(acked):
            m.d.sync += [start.eq(start + acked), length.eq(0), sent.eq(0), resend.eq(0),
                         seq.eq(seq + 1)]

        with m.If(self.host_ack):
            with m.If(sending_results):
                with m.If(self.host_ack_seq == seq):
                    m.d.sync += [early.eq(1), early_length.eq(acked_length)]
            with m.Elif(sent & (self.host_ack_seq == seq)):
                complete(acked_length)
            with m.Elif(sent & (self.host_ack_seq == (seq - 1)[:8])):
                m.d.sync += resend.eq(1)
                m.d.comb += self.retransmit.eq(1)

        # -- what is owed ------------------------------------------------------------
        ack_owed = Signal()
        nak_owed = Signal()
        status_owed = Signal()
        announced = Signal(ack_layout())
        # From power-on and reset the full credits count as grown: the first
        # acknowledgement goes out at once (the host ignores one it did not ask for).
        grown = Signal()
        m.d.comb += grown.eq((status.commands_credit >= announced.commands_credit + MAX_PAYLOAD)
                             | (status.data_credit >= announced.data_credit + MAX_PAYLOAD))
        with m.If(self.ack | self.nak | grown):
            m.d.sync += ack_owed.eq(1)
        with m.If(self.nak):
            m.d.sync += nak_owed.eq(1)
        status_seq = Signal(8)
        with m.If(self.status_request):
            m.d.sync += [status_owed.eq(1), status_seq.eq(self.request_seq)]
        results_due = Signal()
        m.d.comb += results_due.eq(
            resend | (length == 0) & (count != 0)
            & ((count >= limit) | (quiet == RESULTS_FLUSH_CYCLES) & ~waiting))

        # -- frames out ----------------------------------------------------------------
        # The STATUS record, a byte at a time.  By the protocol's consistency rule only
        # the snapshot fields are kept (from the frame's start); every other field is
        # read from ``status`` as its first byte is loaded, and its upper bytes are kept
        # in ``upper`` meanwhile, so a counter moving during the frame is never torn.
        # The byte shown is a register: the payload holds still while the framer waits.
        fields = _status_fields()
        transmitter_values = {"results_pending": count, "results_seq": seq,
                              "results_waiting": waiting, "reserved": Const(0)}
        record_members = status_record_layout().members

        def live(name):
            """The field ``name`` now, at its width in the record."""
            width = Shape.cast(record_members[name]).width
            value = Value.cast(transmitter_values.get(name, getattr(status, name)))
            return value if len(value) == width else Cat(value, Const(0, width - len(value)))

        snapshot_names = [name for name, _, _ in fields if name in STATUS_SNAPSHOT_FIELDS]
        snapshot = Signal(data.StructLayout({name: record_members[name]
                                             for name in snapshot_names}))
        upper = Signal(max(width for name, _, width in fields
                           if name not in STATUS_SNAPSHOT_FIELDS) - 8)
        status_byte = Signal(8)

        def load_status_byte(i, snapshot_source):
            """Statements loading byte ``i`` into ``status_byte``; a snapshot field's
            bits from ``snapshot_source(name)``."""
            pieces, statements = [], []
            for name, start, width in fields:
                low, high = max(start, 8 * i), min(start + width, 8 * i + 8)
                if low >= high:
                    continue
                if name in STATUS_SNAPSHOT_FIELDS:
                    pieces.append(snapshot_source(name)[low - start:high - start])
                elif low == start:
                    pieces.append(live(name)[:8])
                    if width > 8:
                        statements.append(upper.eq(live(name)[8:]))
                else:
                    pieces.append(upper[low - start - 8:high - start - 8])
            return [status_byte.eq(Cat(*pieces)), *statements]

        def snapped(name):
            return getattr(snapshot, name)

        ack_record = Signal(ack_layout())
        index = Signal(range(max(STATUS_BYTES, MAX_PAYLOAD) + 1))
        header = Signal(frame_header_layout())
        shown = Signal()                # a ring byte is on the payload stream
        m.d.comb += self.header.payload.eq(header)
        with m.FSM():
            with m.State("IDLE"):
                m.d.sync += index.eq(0)
                with m.If(ack_owed | self.ack | self.nak):
                    values = {"commands_credit": status.commands_credit,
                              "data_credit": status.data_credit,
                              "nak": nak_owed | self.nak}
                    m.d.sync += [
                        ack_owed.eq(0), nak_owed.eq(0),
                        header.type.eq(FrameType.ACK), header.seq.eq(status.expected - 1),
                        header.length.eq(_ACK_BYTES),
                        *(getattr(ack_record, name).eq(value) for name, value in values.items()),
                        announced.commands_credit.eq(status.commands_credit),
                        announced.data_credit.eq(status.data_credit),
                    ]
                    m.next = "ACK_HEADER"
                with m.Elif(status_owed):
                    m.d.sync += [
                        status_owed.eq(0),
                        *(getattr(snapshot, name).eq(live(name)) for name in snapshot_names),
                        *load_status_byte(0, live),
                        header.type.eq(FrameType.STATUS), header.seq.eq(status_seq),
                        header.length.eq(STATUS_BYTES),
                    ]
                    m.next = "STATUS_HEADER"
                with m.Elif(results_due & ~self.host_ack):
                    # (Not while an acknowledgement moves the frame: it is chosen once the
                    # frame is settled, so its header and its payload agree.)
                    frame_length = Mux(count > limit, limit, count)
                    m.d.sync += [header.type.eq(FrameType.RESULTS), header.seq.eq(seq),
                                 early.eq(0)]
                    with m.If(length == 0):
                        m.d.sync += [length.eq(frame_length), header.length.eq(frame_length)]
                    with m.Elif(length > limit):
                        # Sent again, cut to the host's limit now.
                        m.d.sync += [length.eq(limit), header.length.eq(limit)]
                    with m.Else():
                        m.d.sync += header.length.eq(length)
                    m.next = "RESULTS_HEADER"
            for name in ("ACK", "STATUS", "RESULTS"):
                with m.State(f"{name}_HEADER"):
                    m.d.comb += self.header.valid.eq(1)
                    if name == "RESULTS":
                        m.d.comb += sending_results.eq(1)
                    with m.If(self.header.ready):
                        m.next = f"{name}_PAYLOAD"
            with m.State("ACK_PAYLOAD"):
                m.d.comb += [self.payload.valid.eq(1),
                             self.payload.payload.eq(
                                 Cat(ack_record.as_value()).word_select(index, 8))]
                with m.If(self.payload.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == _ACK_BYTES - 1):
                        m.next = "IDLE"
            with m.State("STATUS_PAYLOAD"):
                m.d.comb += [self.payload.valid.eq(1), self.payload.payload.eq(status_byte)]
                with m.If(self.payload.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.Switch(index):
                        for i in range(STATUS_BYTES - 1):
                            with m.Case(i):
                                m.d.sync += load_status_byte(i + 1, snapped)
                    with m.If(index == STATUS_BYTES - 1):
                        m.next = "IDLE"
            with m.State("RESULTS_PAYLOAD"):
                m.d.comb += sending_results.eq(1)
                # The read port's data is the payload: it moves on only once the byte
                # shown has been taken (or none is shown yet).
                advance = ~shown | self.payload.ready
                m.d.comb += [read.addr.eq(start + index), read.en.eq(advance),
                             self.payload.payload.eq(read.data), self.payload.valid.eq(shown)]
                with m.If(advance):
                    with m.If(index != length):
                        m.d.sync += [shown.eq(1), index.eq(index + 1)]
                    with m.Else():
                        m.d.sync += [shown.eq(0), sent.eq(1), resend.eq(0)]
                        with m.If(self.host_ack & (self.host_ack_seq == seq)):
                            complete(acked_length)
                        with m.Elif(early):
                            complete(early_length)
                        m.next = "IDLE"

        m.d.comb += self.idle.eq(~ack_owed & ~status_owed & ~results_due & ~waiting
                                 & ~self.header.valid & ~self.payload.valid
                                 & ~grown & (quiet == RESULTS_FLUSH_CYCLES) & ~sending_results)
        return m
