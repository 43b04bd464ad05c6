"""Executes LOAD_PARAMS, LOAD_ACT and LOAD_WEIGHT: data-in vectors into the buffers."""

import enum

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import isa
from .config import OPERAND_WIDTH, PARAM_RECORD_BYTES, check_config
from .deserializer import VECTOR_COUNTS, deserializer_command_layout

__all__ = ["LoadUnit", "LoadKind", "load_command_layout"]


class LoadKind(enum.IntEnum):
    PARAMS = 0
    ACT = 1
    WEIGHT = 2


#: The fields of a decoded load and the instruction fields each one carries.
_CARRIES = {
    "addr": (isa.LoadAct.field("addr"), isa.LoadWeight.field("slot")),
    "count": VECTOR_COUNTS,
    "length": (isa.LoadAct.field("length"), isa.LoadWeight.field("n")),
    "signed": (isa.LoadAct.field("signed"), isa.LoadWeight.field("signed")),
    "param_set": (isa.LoadParams.field("param_set"), isa.LoadWeight.field("param_set")),
}


def load_command_layout():
    """A decoded load: ``addr`` is the activation address or the weight slot, ``count``
    the vectors (or weight rows ``k``), ``length`` the bytes per vector (or ``n``); each
    as wide as the widest instruction field it carries."""
    return data.StructLayout({"kind": LoadKind, **{
        name: max(f.width for f in fields) for name, fields in _CARRIES.items()}})


class LoadUnit(wiring.Component):
    """Writes vectors from the data-in deserializer to their destination.

    * ``ACT``: bytes widen to 9-bit operands (sign- or zero-extended) and fill
      activation vectors ``addr .. addr + count - 1``.
    * ``WEIGHT``: row ``r`` of slot ``addr`` becomes ``ext(byte_c) - weight_zero_c``
      (wrapped to 9 bits, the zero point from parameter set ``param_set``) for columns
      ``c < n`` and zero beyond; rows from ``k`` up to ``rows`` are written with zeros
      without taking data.
    * ``PARAMS``: record ``c`` updates column ``c`` of set ``param_set`` if it is
      valid (it breaks none of ``isa.PARAM_RULES``) and no error is latched; an
      invalid record raises
      ``param_error``.

    Members
    -------
    cmd : In(stream.Signature(load_command_layout()))
    deserializer : Out(stream.Signature(deserializer_command_layout(config)))
        Tells the deserializer how many vectors of which length to assemble.
    vectors : In(stream.Signature(ArrayLayout(8, vector_bytes)))
    act_write, weight_write : In(memory.WritePort.Signature(...))
        Connect to the buffers' write ports.
    params : Out(ArrayLayout(ArrayLayout(param_layout(), cols), 2))
        The two sets of column parameter registers (reset to ``isa.ParamRecord()``).
    error_latched : In(1)
    param_error : Out(1)
    slot_written : Out(1)
        A LOAD_WEIGHT into slot ``written_slot`` starts (the array may hold a stale copy).
    written_slot : Out(LoadWeight slot width)
    busy : Out(1)
    """

    def __init__(self, *, config):
        check_config(config)
        self.config = config
        c = config
        operand = signed(OPERAND_WIDTH)
        default = isa.ParamRecord()
        param_init = {f.name: getattr(default, f.name) for f in isa.PARAM_FIELDS
                      if not f.name.startswith("reserved")}
        super().__init__({
            "cmd": In(stream.Signature(load_command_layout())),
            "deserializer": Out(stream.Signature(deserializer_command_layout(c))),
            "vectors": In(stream.Signature(data.ArrayLayout(8, c.vector_bytes))),
            "act_write": In(memory.WritePort.Signature(
                addr_width=ceil_log2(c.act_depth), shape=data.ArrayLayout(operand, c.rows))),
            "weight_write": In(memory.WritePort.Signature(
                addr_width=ceil_log2(c.weight_depth), shape=data.ArrayLayout(operand, c.cols))),
            "params": Out(data.ArrayLayout(data.ArrayLayout(isa.param_layout(), c.cols), 2),
                          init=[[param_init] * c.cols] * 2),
            "error_latched": In(1),
            "param_error": Out(1),
            "slot_written": Out(1),
            "written_slot": Out(isa.LoadWeight.field("slot").width),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        command = Signal(load_command_layout())
        index = Signal(command.count.shape())
        vector = self.vectors.payload
        take = self.vectors.valid & self.vectors.ready

        # Destination rows: act vectors addr+i; weight rows slot * rows + i.
        m.d.comb += [
            self.act_write.addr.eq(command.addr + index),
            self.weight_write.addr.eq(command.addr * c.rows + index),
        ]
        for r in range(c.rows):
            byte = vector[r]
            m.d.comb += self.act_write.data[r].eq(Mux(command.signed, byte.as_signed(), byte))
        for col in range(c.cols):
            byte = vector[col]
            # A Mux, not params[param_set]: the latter shifts both whole sets (see npu.py).
            zero = Mux(command.param_set, self.params[1][col].weight_zero,
                       self.params[0][col].weight_zero)
            widened = Mux(command.signed, byte.as_signed(), byte) - zero
            m.d.comb += self.weight_write.data[col].eq(Mux(col < command.length, widened, 0))

        record = data.View(isa.param_layout(), vector.as_value()[:8 * PARAM_RECORD_BYTES])
        record_valid = ~isa.param_record_invalid(record)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [
                    self.cmd.ready.eq(1),
                    self.slot_written.eq(self.cmd.valid
                                         & (self.cmd.payload.kind == LoadKind.WEIGHT)),
                    self.written_slot.eq(self.cmd.payload.addr),
                ]
                with m.If(self.cmd.valid):
                    m.d.sync += [command.eq(self.cmd.payload), index.eq(0)]
                    m.next = "REQUEST"
            with m.State("REQUEST"):
                m.d.comb += [
                    self.deserializer.valid.eq(1),
                    self.deserializer.payload.count.eq(command.count),
                    self.deserializer.payload.length.eq(
                        Mux(command.kind == LoadKind.PARAMS, PARAM_RECORD_BYTES, command.length)),
                ]
                with m.If(self.deserializer.ready):
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += self.vectors.ready.eq(1)
                with m.If(take):
                    m.d.sync += index.eq(index + 1)
                    with m.Switch(command.kind):
                        with m.Case(LoadKind.ACT):
                            m.d.comb += self.act_write.en.eq(1)
                        with m.Case(LoadKind.WEIGHT):
                            m.d.comb += self.weight_write.en.eq(1)
                        with m.Case(LoadKind.PARAMS):
                            m.d.comb += self.param_error.eq(~record_valid)
                            with m.If(record_valid & ~self.error_latched):
                                for s in range(2):
                                    for col in range(c.cols):
                                        with m.If((command.param_set == s) & (index == col)):
                                            m.d.sync += self.params[s][col].eq(record)
                    with m.If(index == command.count - 1):
                        with m.If((command.kind == LoadKind.WEIGHT) & (command.count != c.rows)):
                            m.next = "ZERO_FILL"
                        with m.Else():
                            m.next = "IDLE"
            with m.State("ZERO_FILL"):
                # Rows k..rows-1 of the tile must be zero: stale weights would add in.
                m.d.comb += [self.weight_write.en.eq(1)]
                for col in range(c.cols):
                    m.d.comb += self.weight_write.data[col].eq(0)
                m.d.sync += index.eq(index + 1)
                with m.If(index == c.rows - 1):
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~self.cmd.ready)
        return m
