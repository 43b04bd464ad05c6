"""Executes MATMUL: loads weight tiles into the array's banks and streams activations through."""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import isa
from .accumulator import accumulate_tag_layout
from .config import check_config

__all__ = ["MatmulUnit", "matmul_command_layout", "act_request_tag_layout", "act_rows_layout"]


def matmul_command_layout():
    return isa.fields_layout(isa.Matmul)


def act_rows_layout():
    """Activation rows a command will still read: ``addr .. end - 1`` if valid (``end`` is
    ``addr + count``, one bit wider, registered with the command so that a hazard
    check only compares)."""
    width = max(isa.Matmul.field("act_addr").width, isa.Matmul.field("count").width) + 1
    return data.StructLayout({"valid": 1, "addr": isa.Matmul.field("act_addr").width,
                              "end": width})


def act_request_tag_layout(config):
    """What travels with each activation: where its result goes and which weight bank."""
    return data.StructLayout({"acc": accumulate_tag_layout(config), "bank": 1})


class MatmulUnit(wiring.Component):
    """Sequences MATMULs in two overlapping stages.

    The *preloader* takes a command and makes its weight tile resident in one of
    the array's two banks: if a bank already holds that slot (and the slot was not
    rewritten since) it is used as it is; otherwise the tile is read from the
    weight buffer, bottom row first, into the bank the previous command does not
    use.  The *streamer* then requests the ``count`` activation vectors, each tagged
    with its accumulator row and bank.  The preloader works on the next command
    while the streamer streams the current one, so a tile change costs no array
    cycles when the stream is at least ``rows`` vectors long.

    Members
    -------
    cmd : In(stream.Signature(matmul_command_layout()))
    weight_requests : Out(stream.Signature(StructLayout({"addr": ..., "tag": {"bank": 1}})))
    act_requests : Out(stream.Signature(StructLayout({"addr": ..., "tag": act_request_tag_layout})))
    weights_pending : In(1)
        A requested weight row has not entered the array yet.
    slot_written : In(1)
        LOAD_WEIGHT is rewriting weight slot ``written_slot``: forget that a bank holds it.
    written_slot : In(LoadWeight slot width)
    preloading : Out(1)
        Weight rows are being requested from the weight buffer.
    queued_rows, streaming_rows : Out(act_rows_layout())
        The activation rows of the preloader's command and of the streamer's: a
        LOAD_ACT must not overwrite them until they are read.
    busy : Out(1)
        A command is being preloaded, waiting or streamed.
    """

    def __init__(self, *, config):
        check_config(config)
        self.config = config
        super().__init__({
            "cmd": In(stream.Signature(matmul_command_layout())),
            "weight_requests": Out(stream.Signature(data.StructLayout({
                "addr": ceil_log2(config.weight_depth),
                "tag": data.StructLayout({"bank": 1})}))),
            "act_requests": Out(stream.Signature(data.StructLayout({
                "addr": ceil_log2(config.act_depth), "tag": act_request_tag_layout(config)}))),
            "weights_pending": In(1),
            "slot_written": In(1),
            "written_slot": In(isa.LoadWeight.field("slot").width),
            "preloading": Out(1),
            "queued_rows": Out(act_rows_layout()),
            "streaming_rows": Out(act_rows_layout()),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rows = self.config.rows
        command = Signal(matmul_command_layout())
        command_end = Signal(act_rows_layout().members["end"])   # its act_addr + count
        bank = Signal()      # the bank of the latest command (the next miss loads the other)
        row = Signal(range(rows + 1))

        # Which weight slot each bank holds, and whether it still matches the buffer.
        resident_slot = [Signal(command.slot.shape(), name=f"resident_slot_{b}")
                         for b in range(2)]
        resident = [Signal(name=f"resident_{b}") for b in range(2)]
        with m.If(self.slot_written):
            for b in range(2):
                with m.If(resident_slot[b] == self.written_slot):
                    m.d.sync += resident[b].eq(0)

        # The command handed from the preloader to the streamer.
        stream_command = Signal(matmul_command_layout())
        stream_end = Signal.like(command_end)
        stream_bank = Signal()
        streaming = Signal()
        index = Signal(stream_command.count.shape())
        handoff = Signal()
        last_request = Signal()
        m.d.comb += last_request.eq(self.act_requests.valid & self.act_requests.ready
                                    & (index == stream_command.count - 1))
        # The streamer can take the next command in the cycle it sends its last request.
        streamer_free = ~streaming | last_request

        m.d.comb += [
            self.weight_requests.payload.addr.eq(command.slot * rows + (rows - 1) - row),
            self.weight_requests.payload.tag.bank.eq(bank),
        ]
        incoming = self.cmd.payload
        hit = [resident[b] & (resident_slot[b] == incoming.slot) for b in range(2)]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [command.eq(incoming), row.eq(0),
                                 command_end.eq(incoming.act_addr + incoming.count)]
                    # Reuse a bank that holds the slot; else load the bank not in use.
                    with m.If(hit[0] | hit[1]):
                        m.d.sync += bank.eq(Mux(Mux(bank, hit[1], hit[0]), bank, ~bank))
                        m.next = "READY"
                    with m.Else():
                        m.d.sync += bank.eq(~bank)
                        for b in range(2):
                            with m.If(bank != b):
                                m.d.sync += [resident_slot[b].eq(incoming.slot),
                                             resident[b].eq(1)]
                        m.next = "PRELOAD"
            with m.State("PRELOAD"):
                m.d.comb += [self.weight_requests.valid.eq(1), self.preloading.eq(1)]
                with m.If(self.weight_requests.ready):
                    m.d.sync += row.eq(row + 1)
                    with m.If(row == rows - 1):
                        m.next = "READY"
            with m.State("READY"):
                # The last weight row must be in the array before a vector that uses it.
                with m.If(~self.weights_pending & streamer_free):
                    m.d.comb += handoff.eq(1)
                    m.next = "IDLE"

        with m.If(self.act_requests.valid & self.act_requests.ready):
            m.d.sync += index.eq(index + 1)
        with m.If(last_request):
            m.d.sync += streaming.eq(0)
        with m.If(handoff):
            m.d.sync += [stream_command.eq(command), stream_end.eq(command_end),
                         stream_bank.eq(bank), streaming.eq(1), index.eq(0)]
        m.d.comb += [
            self.act_requests.valid.eq(streaming),
            self.act_requests.payload.addr.eq(stream_command.act_addr + index),
            self.act_requests.payload.tag.acc.addr.eq(stream_command.acc_addr + index),
            self.act_requests.payload.tag.acc.accumulate.eq(stream_command.accumulate),
            self.act_requests.payload.tag.bank.eq(stream_bank),
        ]
        m.d.comb += [
            self.busy.eq(~self.cmd.ready | streaming),
            self.queued_rows.valid.eq(~self.cmd.ready),
            self.queued_rows.addr.eq(command.act_addr),
            self.queued_rows.end.eq(command_end),
            self.streaming_rows.valid.eq(streaming),
            self.streaming_rows.addr.eq(stream_command.act_addr),
            self.streaming_rows.end.eq(stream_end),
        ]
        return m
