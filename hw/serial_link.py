"""The serial host link: a UART to a host computer, framed, acknowledged and flow
controlled (:mod:`hw.link_protocol`), in the host-link slot of a board
(:mod:`hw.host_link`)."""

import numbers

from amaranth import Module, ResetInserter, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from .config import check_config
from .frame_parser import FrameParser
from .framer import Framer
from .host_link import HostLinkSignature
from .link_protocol import (
    COUNTER_WIDTH,
    CRC_BYTES,
    HEADER_BYTES,
    LINK_STATUS_FIELDS,
    MAX_PAYLOAD,
    count_up,
    link_status_layout,
    status_record_layout,
)
from .link_receiver import LinkReceiver
from .link_transmitter import LinkTransmitter
from .uart import DATA_BITS, check_divisor
from .uart_rx import UartRx
from .uart_tx import UartTx

__all__ = ["SerialLink", "serial_link_leds_layout", "RX_FIFO_DEPTH"]

#: Bytes between the UART receiver and the frame parser: the line keeps arriving while
#: the parser hands a frame of up to :data:`MAX_PAYLOAD` bytes on, a byte per cycle,
#: and a byte lasts at least ``10 * MIN_DIVISOR`` = 40 cycles.
RX_FIFO_DEPTH = 16

#: Status record fields :class:`hw.link_transmitter.LinkTransmitter` fills in itself
#: (``reserved`` stays zero).
_TRANSMITTER_FIELDS = frozenset({"results_pending", "results_seq", "results_waiting",
                                 "reserved"})


def serial_link_leds_layout():
    """The serial link's lights, bit 0 first."""
    return data.StructLayout({"frames": 1, "link_errors": 1, "chip_error": 1})


class SerialLink(wiring.Component):
    """UART, frame parser, link receiver and transmitter, framer: the chip on a serial
    line.

    ::

        rx ─▶ UartRx ─▶ FIFO ─▶ FrameParser ─▶ LinkReceiver ─▶ commands, data_in
        tx ◀─ UartTx ◀─ Framer ◀─ LinkTransmitter ◀─ data_out, status
                                        ▲ acks, requests ┘

    A ``RESET`` frame resets the chip (``chip.reset``), the transmitter and the framer;
    the receiving side and the counters run on.

    Parameters
    ----------
    config : NpuConfig
    divisor : int
        Clock cycles per bit (:func:`hw.uart.uart_divisor`).
    timeout_cycles : int, optional
        Cycles of silence that cut a frame short (default: the time of a whole
        :data:`MAX_PAYLOAD` frame on the line).
    commands_room, data_room : int
        Bytes the link keeps for command words and data-in beats
        (:class:`hw.link_receiver.LinkReceiver`).
    results_room : int
        Bytes it keeps for data-out (:class:`hw.link_transmitter.LinkTransmitter`).

    Members
    -------
    chip : Out(HostLinkSignature(config))
    leds : Out(serial_link_leds_layout())
        ``frames`` toggles with every frame taken; ``link_errors``: a frame or UART byte
        was dropped since the board's reset; ``chip_error``: the chip latched an error.
    rx : In(1)
        The line from the host (high when idle).
    tx : Out(1)
        The line to the host.
    idle : Out(1)
        Nothing to do until the host speaks: no frame in progress either way, nothing
        owed, the link's buffers and the chip idle (for simulators, which may then wait
        for the host without running the clock).
    counters : Out(link_status_layout())
        The link's counters (also in every ``STATUS`` frame).
    """

    def __init__(self, *, config, divisor, timeout_cycles=None, commands_room=MAX_PAYLOAD,
                 data_room=4 * MAX_PAYLOAD, results_room=4 * MAX_PAYLOAD):
        check_config(config)
        self.config = config
        self.divisor = check_divisor(divisor)
        if timeout_cycles is None:
            timeout_cycles = (DATA_BITS + 2) * self.divisor * (HEADER_BYTES + MAX_PAYLOAD
                                                               + CRC_BYTES)
        if not isinstance(timeout_cycles, numbers.Integral) or isinstance(timeout_cycles, bool) \
                or timeout_cycles <= 0:
            raise TypeError(f"timeout_cycles must be a positive integer, not {timeout_cycles!r}")
        self.timeout_cycles = int(timeout_cycles)
        # Built here, so that bad sizes raise at construction.
        self.receiver = LinkReceiver(config=config, commands_room=commands_room,
                                     data_room=data_room)
        self.transmitter = LinkTransmitter(config=config, results_room=results_room)
        super().__init__({
            "chip": Out(HostLinkSignature(config)),
            "leds": Out(serial_link_leds_layout()),
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "idle": Out(1),
            "counters": Out(link_status_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        chip = self.chip
        m.submodules.uart_rx = uart_rx = UartRx(divisor=self.divisor)
        m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=RX_FIFO_DEPTH)
        m.submodules.parser = parser = FrameParser(timeout_cycles=self.timeout_cycles)
        m.submodules.receiver = receiver = self.receiver
        reset = receiver.reset
        m.submodules.transmitter = transmitter = ResetInserter(reset)(self.transmitter)
        m.submodules.framer = framer = ResetInserter(reset)(Framer())
        m.submodules.uart_tx = uart_tx = UartTx(divisor=self.divisor)

        m.d.comb += [
            uart_rx.rx.eq(self.rx),
            rx_fifo.w_data.eq(uart_rx.data.payload),
            rx_fifo.w_en.eq(uart_rx.data.valid),
            uart_rx.data.ready.eq(rx_fifo.w_rdy),
            parser.bytes.payload.eq(rx_fifo.r_data),
            parser.bytes.valid.eq(rx_fifo.r_rdy),
            rx_fifo.r_en.eq(parser.bytes.ready),
            self.tx.eq(uart_tx.tx),
        ]
        wiring.connect(m, parser.header, receiver.header)
        wiring.connect(m, parser.payload, receiver.payload)
        wiring.connect(m, wiring.flipped(chip.commands), receiver.commands)
        wiring.connect(m, wiring.flipped(chip.data_in), receiver.data_in)
        wiring.connect(m, transmitter.data_out, wiring.flipped(chip.data_out))
        wiring.connect(m, transmitter.header, framer.header)
        wiring.connect(m, transmitter.payload, framer.payload)
        wiring.connect(m, framer.bytes, uart_tx.data)
        m.d.comb += chip.reset.eq(reset)

        counters = self.counters
        retransmissions = Signal(COUNTER_WIDTH)
        with m.If(transmitter.retransmit):
            count_up(m, retransmissions)
        sources = {"frames": receiver, "duplicates": receiver, "out_of_sequence": receiver,
                   "rejected": receiver, "crc_errors": parser, "header_errors": parser,
                   "truncated": parser, "framing_errors": uart_rx, "overruns": uart_rx}
        for field in LINK_STATUS_FIELDS:
            source = (retransmissions if field.name == "retransmissions"
                      else getattr(sources[field.name], field.name))
            m.d.comb += getattr(counters, field.name).eq(source)

        status = Signal(status_record_layout())
        # Each field of the record from the first part that has it; the transmitter fills
        # in its own, and a field nobody has is a mistake of the layout, not a zero.
        owners = (counters, chip, receiver)
        for name in status_record_layout().members:
            if name in _TRANSMITTER_FIELDS:
                continue
            owner = next((o for o in owners if hasattr(o, name)), None)
            if owner is None:
                raise AssertionError(f"no part of the serial link has the status field {name!r}")
            m.d.comb += getattr(status, name).eq(getattr(owner, name))
        m.d.comb += [
            transmitter.status.eq(status),
            transmitter.ack.eq(receiver.ack),
            transmitter.nak.eq(receiver.nak),
            transmitter.status_request.eq(receiver.status_request),
            transmitter.host_ack.eq(receiver.host_ack),
            transmitter.host_ack_seq.eq(receiver.host_ack_seq),
            transmitter.request_seq.eq(receiver.request_seq),
            transmitter.host_ack_length.eq(receiver.host_ack_length),
            transmitter.results_limit.eq(receiver.results_limit),
        ]

        frame_light = Signal()
        last_frames = Signal(COUNTER_WIDTH)
        m.d.sync += last_frames.eq(receiver.frames)
        with m.If(last_frames != receiver.frames):
            m.d.sync += frame_light.eq(~frame_light)
        dropped = (counters.crc_errors | counters.header_errors | counters.truncated
                   | counters.framing_errors | counters.overruns) != 0
        m.d.comb += [
            self.leds.frames.eq(frame_light),
            self.leds.link_errors.eq(dropped),
            self.leds.chip_error.eq(chip.error != 0),
            self.idle.eq(~rx_fifo.r_rdy & parser.idle & receiver.idle & transmitter.idle
                         & ~chip.busy & ~chip.data_out.valid),
        ]
        return m
