"""The command decoder and sequencer: the chip's own control."""

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .config import COMMAND_WIDTH, STATUS_RECORD_BYTES, check_config
from .isa import ErrorCode, Opcode
from .load_unit import LoadKind, load_command_layout
from .matmul_unit import act_rows_layout, matmul_command_layout
from .serializer import out_vector_layout
from .store_unit import store_command_layout, store_end_shape

__all__ = ["Controller"]


class Controller(wiring.Component):
    """Fetches, checks and dispatches commands in order, one per cycle at best.

    Each command is checked as it is fetched, and its error code is registered with
    it (as are the ends ``addr + count`` of the rows it writes or reads), so that the
    dispatch logic compares registers only; the units register the ends of what they
    hold too.  Each command is checked against the configuration in the order of
    :class:`~hw.isa.ErrorCode`: its opcode, its reserved bits, then the rules of its
    instruction (``RULES`` in :mod:`hw.isa`: the decoder is built from them).  A
    malformed command latches its error code (the first error wins) and is consumed
    without effect.  While an error is latched every command
    but ``NOP``, ``FENCE``, ``READ_STATUS`` and ``CLEAR_ERROR`` is consumed without
    effect and without taking data.

    A well-formed command is dispatched as soon as its unit can take it and no
    earlier command still uses what it touches, so loads, matmuls and stores
    overlap where they are independent:

    ============  ==========================================================
    command       waits for
    ============  ==========================================================
    LOAD_ACT      the load unit, and any MATMUL in the matmul unit that will
                  still read activation rows it writes
    LOAD_WEIGHT   the load unit, and no weight tile being read for the array
    LOAD_PARAMS   the load unit, and the store path if the store in it uses the
                  same parameter set
    MATMUL        the matmul unit's preloader, the load unit (pending buffer
                  writes), and the store path if the store in it reads
                  accumulator rows the MATMUL writes
    STORE         the load unit, the store path and every result of earlier
                  matmuls written to the accumulator
    READ_STATUS   the load unit and the store path, so that its record
                  follows every earlier output and error
    CLEAR_ERROR   the load unit (an invalid record may still raise BAD_PARAM);
                  a malformed command waits for it too, for the same reason
    FENCE         everything
    ============  ==========================================================

    Members
    -------
    commands : In(stream.Signature(COMMAND_WIDTH))
        The command stream.
    load, matmul, store : Out(stream.Signature(...))
        Decoded commands for the execution units.
    status_record : Out(stream.Signature(out_vector_layout(config)))
        The ``READ_STATUS`` record, towards the data-out serializer.
    load_idle, preloading, compute_drained, store_idle, all_idle : In(1)
        What the datapath is doing (see :class:`~hw.npu.Npu`).
    queued_rows, streaming_rows : In(act_rows_layout())
        Activation rows the matmul unit's commands will still read.
    store_current : In(store_command_layout())
        The store in the store path (its rows and parameter set).
    store_end : In(store_end_shape())
        ``acc_addr + count`` of ``store_current``.
    param_error : In(1)
        The load unit met an invalid requantization record.
    busy : Out(1)
        A fetched command waits to be dispatched.
    error, error_opcode : Out(isa.status_shape(...))
        The sticky error code and the opcode of the command that raised it, as wide as
        their status record fields.
    executed : Out(isa.status_shape("commands"))
        Commands consumed since reset (modulo 2**width).
    """

    def __init__(self, *, config):
        check_config(config)
        self.config = config
        super().__init__({
            "commands": In(stream.Signature(COMMAND_WIDTH)),
            "load": Out(stream.Signature(load_command_layout())),
            "matmul": Out(stream.Signature(matmul_command_layout())),
            "store": Out(stream.Signature(store_command_layout())),
            "status_record": Out(stream.Signature(out_vector_layout(config))),
            "load_idle": In(1),
            "queued_rows": In(act_rows_layout()),
            "streaming_rows": In(act_rows_layout()),
            "preloading": In(1),
            "compute_drained": In(1),
            "store_idle": In(1),
            "all_idle": In(1),
            "store_current": In(store_command_layout()),
            "store_end": In(store_end_shape()),
            "param_error": In(1),
            "busy": Out(1),
            "error": Out(isa.status_shape("error")),
            "error_opcode": Out(isa.status_shape("error_opcode")),
            "executed": Out(isa.status_shape("commands")),
        })

    @staticmethod
    def _views(word):
        """``word`` as each instruction's fields, by opcode."""
        return {op: data.View(isa.command_layout(cls), word)
                for op, cls in isa.INSTRUCTIONS.items()}

    def _check(self, m, word):
        """The ErrorCode of ``word`` (combinational), in ErrorCode priority order."""
        code = Signal(ErrorCode, name="fetched_code")
        opcode = word[:isa.OPCODE_WIDTH]
        views = self._views(word)
        with m.Switch(opcode):
            for op, cls in isa.INSTRUCTIONS.items():
                with m.Case(op):
                    # The first check that fails decides: reserved bits, then each code
                    # of the instruction's rules, in ErrorCode order.
                    checks = [(ErrorCode.RESERVED_BITS, views[op].reserved != 0),
                              *cls.checks(views[op], self.config)]
                    for i, (error, violated) in enumerate(checks):
                        with (m.Elif if i else m.If)(violated):
                            m.d.comb += code.eq(error)
            with m.Default():
                m.d.comb += code.eq(ErrorCode.BAD_OPCODE)
        return code

    def elaborate(self, platform):
        m = Module()
        word = Signal(COMMAND_WIDTH)
        opcode = word[:isa.OPCODE_WIDTH]
        views = self._views(word)
        # Registered with the word as it is fetched: its error code, the end of the
        # activation rows a LOAD_ACT writes and of the accumulator rows a MATMUL writes.
        incoming = self.commands.payload
        fetched = self._views(incoming)
        code = Signal(ErrorCode)
        act_end = Signal(range(2 ** isa.LoadAct.field("addr").width
                               + 2 ** isa.LoadAct.field("count").width))
        acc_end = Signal(range(2 ** isa.Matmul.field("acc_addr").width
                               + 2 ** isa.Matmul.field("count").width))
        fetch_updates = [
            code.eq(self._check(m, incoming)),
            act_end.eq(fetched[Opcode.LOAD_ACT].addr + fetched[Opcode.LOAD_ACT].count),
            acc_end.eq(fetched[Opcode.MATMUL].acc_addr + fetched[Opcode.MATMUL].count),
        ]

        # Pass decoded fields to the units; only `valid` depends on the state.
        load_act, load_weight = views[Opcode.LOAD_ACT], views[Opcode.LOAD_WEIGHT]
        load = self.load.payload
        with m.Switch(opcode):
            with m.Case(Opcode.LOAD_PARAMS):
                m.d.comb += [load.kind.eq(LoadKind.PARAMS),
                             load.count.eq(views[Opcode.LOAD_PARAMS].count),
                             load.param_set.eq(views[Opcode.LOAD_PARAMS].param_set)]
            with m.Case(Opcode.LOAD_ACT):
                m.d.comb += [load.kind.eq(LoadKind.ACT), load.addr.eq(load_act.addr),
                             load.count.eq(load_act.count), load.length.eq(load_act.length),
                             load.signed.eq(load_act.signed)]
            with m.Case(Opcode.LOAD_WEIGHT):
                m.d.comb += [load.kind.eq(LoadKind.WEIGHT), load.addr.eq(load_weight.slot),
                             load.count.eq(load_weight.k), load.length.eq(load_weight.n),
                             load.signed.eq(load_weight.signed),
                             load.param_set.eq(load_weight.param_set)]
        mm, st = views[Opcode.MATMUL], views[Opcode.STORE]
        m.d.comb += [
            self.matmul.payload.act_addr.eq(mm.act_addr),
            self.matmul.payload.count.eq(mm.count),
            self.matmul.payload.slot.eq(mm.slot),
            self.matmul.payload.acc_addr.eq(mm.acc_addr),
            self.matmul.payload.accumulate.eq(mm.accumulate),
            self.store.payload.acc_addr.eq(st.acc_addr),
            self.store.payload.count.eq(st.count),
            self.store.payload.n.eq(st.n),
            self.store.payload.raw.eq(st.raw),
            self.store.payload.param_set.eq(st.param_set),
        ]

        # The status record: error, failing opcode, commands consumed before this one.
        record = data.View(isa.status_layout(),
                           self.status_record.payload.bytes.as_value()[:8 * STATUS_RECORD_BYTES])
        m.d.comb += [
            record.error.eq(self.error),
            record.error_opcode.eq(self.error_opcode),
            record.commands.eq(self.executed),
            self.status_record.payload.length.eq(STATUS_RECORD_BYTES),
        ]

        with m.If(self.param_error & (self.error == ErrorCode.NONE)):
            m.d.sync += [self.error.eq(ErrorCode.BAD_PARAM),
                         self.error_opcode.eq(Opcode.LOAD_PARAMS)]

        # One fetched command waits in `word`; a new one enters as the old one leaves.
        pending = Signal()
        done = Signal()
        m.d.comb += [
            self.busy.eq(pending),
            self.commands.ready.eq(~pending | done),
        ]
        with m.If(self.commands.valid & self.commands.ready):
            m.d.sync += [word.eq(incoming), pending.eq(1), *fetch_updates]
        with m.Elif(done):
            m.d.sync += pending.eq(0)
        with m.If(done):
            m.d.sync += self.executed.eq(self.executed + 1)

        skip = (self.error != ErrorCode.NONE) & ~_any(opcode == op for op in isa.ALWAYS_EXECUTED)
        stored = self.store_current
        with m.If(pending):
            with m.If(code != ErrorCode.NONE):
                # A LOAD_PARAMS still loading may yet raise BAD_PARAM, which came first.
                with m.If(self.load_idle):
                    with m.If(self.error == ErrorCode.NONE):
                        m.d.sync += [self.error.eq(code), self.error_opcode.eq(opcode)]
                    m.d.comb += done.eq(1)
            with m.Elif(skip):
                m.d.comb += done.eq(1)
            with m.Else():
                with m.Switch(opcode):
                    with m.Case(Opcode.LOAD_ACT):
                        la = views[Opcode.LOAD_ACT]
                        rows_read = _any(
                            r.valid & (la.addr < r.end) & (r.addr < act_end)
                            for r in (self.queued_rows, self.streaming_rows))
                        self._dispatch(m, self.load, done, self.load_idle & ~rows_read)
                    with m.Case(Opcode.LOAD_WEIGHT):
                        self._dispatch(m, self.load, done, self.load_idle & ~self.preloading)
                    with m.Case(Opcode.LOAD_PARAMS):
                        same_set = views[Opcode.LOAD_PARAMS].param_set == stored.param_set
                        self._dispatch(m, self.load, done,
                                       self.load_idle & (self.store_idle | ~same_set))
                    with m.Case(Opcode.MATMUL):
                        overlap = ((mm.acc_addr < self.store_end)
                                   & (stored.acc_addr < acc_end))
                        self._dispatch(m, self.matmul, done,
                                       self.load_idle & (self.store_idle | ~overlap))
                    with m.Case(Opcode.STORE):
                        self._dispatch(m, self.store, done, self.load_idle & self.store_idle
                                       & self.compute_drained)
                    with m.Case(Opcode.READ_STATUS):
                        self._dispatch(m, self.status_record, done,
                                       self.load_idle & self.store_idle)
                    with m.Case(Opcode.FENCE):
                        m.d.comb += done.eq(self.all_idle)
                    with m.Case(Opcode.CLEAR_ERROR):
                        with m.If(self.load_idle):  # after any BAD_PARAM still to come
                            m.d.sync += [self.error.eq(ErrorCode.NONE),
                                         self.error_opcode.eq(0)]
                            m.d.comb += done.eq(1)
                    with m.Default():  # NOP
                        m.d.comb += done.eq(1)
        return m

    @staticmethod
    def _dispatch(m, unit, done, clear):
        """Offer the command to ``unit`` once ``clear``; done when the unit takes it."""
        with m.If(clear):
            m.d.comb += [unit.valid.eq(1), done.eq(unit.ready)]


def _any(conditions):
    result = 0
    for cond in conditions:
        result = result | cond
    return result
