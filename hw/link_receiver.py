"""The link layer's receive side: intact host frames (from :class:`hw.frame_parser.FrameParser`)
into the chip's command and data-in streams, by the exchange rules of
:mod:`hw.link_protocol`."""

import numbers

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import COMMAND_WIDTH, check_config
from .link_protocol import (
    COUNTER_WIDTH,
    HOST_ACK_FIELDS,
    MAX_PAYLOAD,
    SEQUENCE_MODULUS,
    FrameType,
    count_up,
    frame_header_layout,
)

__all__ = ["LinkReceiver", "RESET_CYCLES", "COMMAND_BYTES", "frame_room"]

#: Cycles a ``RESET`` frame holds the chip's (and the link's send side's) reset high.
RESET_CYCLES = 4
#: Bytes of a command word on the link.
COMMAND_BYTES = COMMAND_WIDTH // 8
_CREDIT_MAX = (1 << 16) - 1


def frame_room(name, value, unit):
    """``value`` (bytes of a buffer) as whole ``unit``-byte items, at least one frame's
    worth (:data:`MAX_PAYLOAD` bytes, rounded down to whole items, and at least one)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer number of bytes, not {value!r}")
    items = int(value) // unit
    least = max(1, MAX_PAYLOAD // unit)
    if items < least:
        raise ValueError(f"{name} must be at least {least * unit} bytes (one frame of "
                         f"{unit}-byte items), not {value!r}")
    return items


class LinkReceiver(wiring.Component):
    """Acts on each intact host frame: copies, acknowledges, drops or resets.

    The command words and the data-in beats of the frames taken wait in two FIFOs
    (``commands_room`` and ``data_room`` bytes), so neither stream waits behind the
    other; a frame is taken only when its payload fits its FIFO whole, so copying it
    never stops and the frame parser is never held up by the chip.

    Parameters
    ----------
    config : NpuConfig
    commands_room, data_room : int
        Bytes of the command and data-in FIFOs, each at least one frame.

    Members
    -------
    header : In(stream.Signature(frame_header_layout()))
    payload : In(stream.Signature(8))
        Intact frames (:class:`hw.frame_parser.FrameParser`).
    commands : Out(stream.Signature(64))
    data_in : Out(stream.Signature(8 * data_bytes))
        To the chip.
    reset : Out(1)
        High for :data:`RESET_CYCLES` cycles after a ``RESET`` frame: the chip and the
        link's send side are reset (this component's FIFOs are, by itself).
    expected : Out(8)
        The sequence number of the host frame expected next.
    ack, nak : Out(1)
        One cycle each: acknowledge ``expected - 1`` (with ``nak`` set for ``nak``).
    status_request : Out(1)
        One cycle: a ``STATUS`` request arrived, numbered ``request_seq``.
    host_ack : Out(1)
        One cycle: the host acknowledged the chip's frame ``host_ack_seq``.
    host_ack_seq, request_seq : Out(8)
    host_ack_length : Out(16)
        The payload bytes of the acknowledged frame as the host received it.
    results_limit : Out(16)
        From the host's last ``ACK`` (:data:`MAX_PAYLOAD` after a reset).
    commands_credit, data_credit : Out(16)
        Bytes of room in the FIFOs now.
    frames, duplicates, out_of_sequence, rejected : Out(COUNTER_WIDTH)
        The link status record's counters (from the board's reset, saturating).
    idle : Out(1)
        No frame being handled and both FIFOs empty.
    """

    def __init__(self, *, config, commands_room=MAX_PAYLOAD, data_room=4 * MAX_PAYLOAD):
        check_config(config)
        self.config = config
        self.command_depth = frame_room("commands_room", commands_room, COMMAND_BYTES)
        self.data_depth = frame_room("data_room", data_room, config.data_bytes)
        if config.data_bytes > MAX_PAYLOAD:
            raise ValueError(f"config.data_bytes must be at most {MAX_PAYLOAD} (a beat per "
                             f"frame), not {config.data_bytes}")
        super().__init__({
            "header": In(stream.Signature(frame_header_layout())),
            "payload": In(stream.Signature(8)),
            "commands": Out(stream.Signature(COMMAND_WIDTH)),
            "data_in": Out(stream.Signature(config.data_width)),
            "reset": Out(1),
            "expected": Out(8, init=1),
            "ack": Out(1),
            "nak": Out(1),
            "status_request": Out(1),
            "host_ack": Out(1),
            "host_ack_seq": Out(8),
            "request_seq": Out(8),
            "host_ack_length": Out(16),
            "results_limit": Out(16, init=MAX_PAYLOAD),
            "commands_credit": Out(16),
            "data_credit": Out(16),
            "frames": Out(COUNTER_WIDTH),
            "duplicates": Out(COUNTER_WIDTH),
            "out_of_sequence": Out(COUNTER_WIDTH),
            "rejected": Out(COUNTER_WIDTH),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        beat_bytes = self.config.data_bytes
        # Command words wait as bytes: a block RAM holds a byte FIFO whole, where a
        # 64-bit one takes four and, for the read-during-write rule yosys cannot see the
        # FIFO never needs, a copy of the written word in flip-flops.  A word is put
        # together at the FIFO's output for the chip.
        command_fifo = fifo.SyncFIFOBuffered(width=8,
                                             depth=self.command_depth * COMMAND_BYTES)
        data_fifo = fifo.SyncFIFOBuffered(width=self.config.data_width, depth=self.data_depth)
        m.submodules.command_fifo = ResetInserter(self.reset)(command_fifo)
        flush = Signal()
        m.submodules.data_fifo = ResetInserter(self.reset | flush)(data_fifo)
        command_word = Signal(COMMAND_WIDTH)
        command_bytes = Signal(range(COMMAND_BYTES + 1))    # of command_word
        word_done = command_bytes == COMMAND_BYTES
        m.d.comb += [self.commands.payload.eq(command_word),
                     self.commands.valid.eq(word_done),
                     command_fifo.r_en.eq(~word_done)]
        with m.If(self.reset | self.commands.valid & self.commands.ready):
            m.d.sync += command_bytes.eq(0)
        with m.Elif(command_fifo.r_rdy & ~word_done):
            m.d.sync += [command_word.eq(Cat(command_word[8:], command_fifo.r_data)),
                         command_bytes.eq(command_bytes + 1)]
        m.d.comb += [
            self.data_in.payload.eq(data_fifo.r_data),
            self.data_in.valid.eq(data_fifo.r_rdy),
            data_fifo.r_en.eq(self.data_in.ready),
        ]
        command_free = Signal(range(COMMAND_BYTES * self.command_depth + 1))
        data_free = Signal(range(beat_bytes * self.data_depth + 1))
        m.d.comb += [
            command_free.eq(self.command_depth * COMMAND_BYTES - command_fifo.level
                            - command_bytes),
            data_free.eq((self.data_depth - data_fifo.level) * beat_bytes),
            self.commands_credit.eq(_saturate(command_free)),
            self.data_credit.eq(_saturate(data_free)),
        ]

        header = Signal(frame_header_layout())     # its type and seq (length below)
        # The parser passes no header longer than MAX_PAYLOAD (a header error), so the
        # length is kept, compared and counted to in 9 bits rather than 16.
        length = Signal(range(MAX_PAYLOAD + 1))
        count = Signal(range(MAX_PAYLOAD + 1))
        count_next = Signal(range(MAX_PAYLOAD + 2))
        distance = Signal(8)    # seq - expected, modulo 256
        host_ack = Signal(24)   # the host ACK's bytes before its last
        beat = Signal(self.config.data_width)
        reset_count = Signal(range(RESET_CYCLES + 1))
        byte = self.payload.payload
        taken = Signal()
        m.d.comb += [taken.eq(self.payload.valid & self.payload.ready),
                     distance.eq(header.seq - self.expected),
                     count_next.eq(count + 1)]
        last = count_next == length     # (one adder for the count and this test)


        def whole(unit):
            return _remainder(length, unit) == 0

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.header.ready.eq(1)
                with m.If(self.header.valid):
                    m.d.sync += [header.type.eq(self.header.payload.type),
                                 header.seq.eq(self.header.payload.seq),
                                 length.eq(self.header.payload.length), count.eq(0)]
                    m.next = "DECIDE"
            with m.State("DECIDE"):
                is_data = header.type == FrameType.DATA
                with m.If(header.type == FrameType.RESET):
                    with m.If(length == 0):
                        m.d.sync += reset_count.eq(0)
                        m.next = "RESET"
                    with m.Else():
                        count_up(m, self.rejected)
                        m.next = "DRAIN"
                with m.Elif(header.type == FrameType.STATUS):
                    with m.If(length == 0):
                        m.d.comb += [self.status_request.eq(1),
                                     self.request_seq.eq(header.seq)]
                    with m.Else():
                        count_up(m, self.rejected)
                    m.next = "DRAIN"
                with m.Elif(header.type == FrameType.ACK):
                    with m.If(length == sum(f.width for f in HOST_ACK_FIELDS) // 8):
                        m.next = "HOST_ACK"
                    with m.Else():
                        count_up(m, self.rejected)
                        m.next = "DRAIN"
                with m.Elif((header.type == FrameType.COMMANDS) | is_data
                            | (header.type == FrameType.FLUSH)):
                    with m.If(distance == 0):
                        fits = Signal()
                        m.d.comb += fits.eq(
                            (header.type == FrameType.COMMANDS) & whole(COMMAND_BYTES)
                            & (length <= command_free)
                            | is_data & whole(beat_bytes) & (length <= data_free))
                        with m.If(header.type == FrameType.FLUSH):
                            with m.If(length == 0):
                                m.next = "FLUSH"
                            with m.Else():
                                count_up(m, self.rejected)
                                m.next = "DRAIN"
                        with m.Elif(~fits):
                            count_up(m, self.rejected)
                            m.next = "DRAIN"
                        with m.Elif(length == 0):
                            m.next = "TAKEN"
                        with m.Elif(is_data):
                            m.next = "COPY_DATA"
                        with m.Else():
                            m.next = "COPY_COMMANDS"
                    with m.Elif(distance[-1]):
                        # Up to 128 behind: a duplicate.
                        count_up(m, self.duplicates)
                        m.d.comb += self.ack.eq(1)
                        m.next = "DRAIN"
                    with m.Else():
                        count_up(m, self.out_of_sequence)
                        m.d.comb += self.nak.eq(1)
                        m.next = "DRAIN"
                with m.Else():
                    count_up(m, self.rejected)     # a chip-to-host type from the host
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(count == length):
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += self.payload.ready.eq(1)
                    with m.If(taken):
                        m.d.sync += count.eq(count_next)
            for name, target, unit, shift in (
                    ("COPY_COMMANDS", command_fifo, 1, None),
                    ("COPY_DATA", data_fifo, beat_bytes, beat)):
                with m.State(name):
                    shifted = Cat(shift[8:], byte) if unit > 1 else byte
                    ends_item = _remainder(count, unit) == unit - 1
                    m.d.comb += [target.w_data.eq(shifted),
                                 self.payload.ready.eq(~ends_item | target.w_rdy)]
                    with m.If(taken):
                        m.d.sync += count.eq(count_next)
                        if unit > 1:
                            m.d.sync += shift.eq(shifted)
                        m.d.comb += target.w_en.eq(ends_item)
                        with m.If(last):
                            m.next = "TAKEN"
            with m.State("FLUSH"):
                m.d.comb += flush.eq(1)
                m.next = "TAKEN"
            with m.State("TAKEN"):
                count_up(m, self.frames)
                m.d.sync += self.expected.eq(header.seq + 1)
                m.next = "ACK"
            with m.State("ACK"):
                m.d.comb += self.ack.eq(1)
                m.next = "IDLE"
            with m.State("HOST_ACK"):
                m.d.comb += self.payload.ready.eq(1)
                fields = Signal(32)
                limit, acked_length = fields[:16], fields[16:]
                m.d.comb += fields.eq(Cat(host_ack, byte))
                with m.If(taken):
                    m.d.sync += [host_ack.eq(Cat(host_ack[8:], byte)), count.eq(count_next)]
                    with m.If(last):
                        m.d.comb += [self.host_ack.eq(1), self.host_ack_seq.eq(header.seq),
                                     self.host_ack_length.eq(acked_length)]
                        with m.If((limit != 0) & (limit <= MAX_PAYLOAD)):
                            m.d.sync += self.results_limit.eq(limit)
                        m.next = "IDLE"
            with m.State("RESET"):
                m.d.comb += self.reset.eq(1)
                m.d.sync += reset_count.eq(reset_count + 1)
                with m.If(reset_count == RESET_CYCLES - 1):
                    count_up(m, self.frames)
                    m.d.sync += [self.expected.eq(1), self.results_limit.eq(MAX_PAYLOAD)]
                    m.next = "ACK"
        assert SEQUENCE_MODULUS == 256

        # header.ready is high only in IDLE.
        m.d.comb += self.idle.eq(self.header.ready & ~self.header.valid
                                 & (command_fifo.level == 0) & (command_bytes == 0)
                                 & (data_fifo.level == 0))
        return m


def _remainder(value, unit):
    """``value % unit``: its low bits for a power of two."""
    if unit & (unit - 1) == 0:
        return value[:unit.bit_length() - 1] if unit > 1 else Const(0, 1)
    return value % unit


def _saturate(value):
    if value.shape().width <= 16:
        return value
    return Mux(value > _CREDIT_MAX, _CREDIT_MAX, value)
