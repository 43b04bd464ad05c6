"""The top level: a self-controlled int8 matrix unit."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import isa
from .accumulator import AccumulatorBuffer, accumulate_tag_layout
from .config import COMMAND_WIDTH, OPERAND_WIDTH, NpuConfig, check_config
from .controller import Controller
from .deserializer import VectorDeserializer
from .load_unit import LoadUnit
from .matmul_unit import MatmulUnit, act_request_tag_layout
from .memory_reader import MemoryReader
from .requantizer import Requantizer
from .serializer import VectorSerializer
from .skid_buffer import SkidBuffer
from .store_unit import StoreUnit, store_tag_layout
from .systolic_array import SystolicArray

__all__ = ["Npu"]


class Npu(wiring.Component):
    """The matrix unit: a command stream and a data stream in, a data stream out.

    The host never drives the array: the controller decodes each command and the
    load, matmul and store units sequence every buffer access, multiply,
    accumulate, requantization and output beat themselves.  Commands execute in
    order but overlap where they are independent (see :class:`Controller`): a
    weight tile loads and preloads into the array's idle bank while the other
    bank streams.  See ``hw/isa.py`` for
    the commands and ``README.md`` for the block diagram.

    Parameters
    ----------
    config : NpuConfig

    Members
    -------
    commands : In(stream.Signature(64))
        Command words.
    data_in : In(stream.Signature(8 * data_bytes))
        Activations, weights and requantization records, as the commands ask for them.
    data_out : Out(stream.Signature(8 * data_bytes))
        Stored rows and status records.
    busy : Out(1)
        A command is executing or data is in flight.
    error, error_opcode : Out(isa.status_shape(...))
        Sticky error code (:class:`~hw.isa.ErrorCode`) and the opcode that raised it.
    executed : Out(isa.status_shape("commands"))
        Commands consumed since reset.
    cycles : Out(isa.status_shape("commands"))
        Cycles the chip was busy or had a command waiting, since reset.
    array_cycles : Out(isa.status_shape("commands"))
        Cycles an activation vector entered the array, since reset
        (``array_cycles * rows * cols`` multiply-accumulates were issued).
    """

    def __init__(self, *, config=None):
        if config is None:
            config = NpuConfig()
        check_config(config)
        self.config = config
        super().__init__({
            "commands": In(stream.Signature(COMMAND_WIDTH)),
            "data_in": In(stream.Signature(config.data_width)),
            "data_out": Out(stream.Signature(config.data_width)),
            "busy": Out(1),
            "error": Out(isa.status_shape("error")),
            "error_opcode": Out(isa.status_shape("error_opcode")),
            "executed": Out(isa.status_shape("commands")),
            "cycles": Out(isa.status_shape("commands")),
            "array_cycles": Out(isa.status_shape("commands")),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        operand = signed(OPERAND_WIDTH)

        m.submodules.controller = controller = Controller(config=c)
        m.submodules.deserializer = deserializer = VectorDeserializer(config=c)
        m.submodules.load_unit = load_unit = LoadUnit(config=c)
        m.submodules.matmul_unit = matmul_unit = MatmulUnit(config=c)
        m.submodules.store_unit = store_unit = StoreUnit(config=c)
        m.submodules.array = array = SystolicArray(config=c,
                                                   tag_shape=accumulate_tag_layout(c))
        m.submodules.accumulator = accumulator = AccumulatorBuffer(
            config=c, read_tag_shape=store_tag_layout(c))
        m.submodules.requantizer = requantizer = Requantizer(config=c)
        m.submodules.serializer = serializer = VectorSerializer(config=c)
        m.submodules.data_out_buffer = data_out_buffer = SkidBuffer(shape=c.data_width)

        act_shape = data.ArrayLayout(operand, c.rows)
        weight_shape = data.ArrayLayout(operand, c.cols)
        m.submodules.act_buffer = act_buffer = memory.Memory(
            shape=act_shape, depth=c.act_depth, init=[])
        m.submodules.weight_buffer = weight_buffer = memory.Memory(
            shape=weight_shape, depth=c.weight_depth, init=[])
        m.submodules.act_reader = act_reader = MemoryReader(
            addr_width=ceil_log2(c.act_depth), shape=act_shape,
            tag_shape=act_request_tag_layout(c))
        m.submodules.weight_reader = weight_reader = MemoryReader(
            addr_width=ceil_log2(c.weight_depth), shape=weight_shape,
            tag_shape=data.StructLayout({"bank": 1}))

        # Commands in, decoded commands to the units.
        wiring.connect(m, wiring.flipped(self.commands), controller.commands)
        wiring.connect(m, controller.load, load_unit.cmd)
        wiring.connect(m, controller.matmul, matmul_unit.cmd)
        wiring.connect(m, controller.store, store_unit.cmd)

        # Loads: data-in -> deserializer -> load unit -> buffers and parameter registers.
        wiring.connect(m, wiring.flipped(self.data_in), deserializer.beats)
        wiring.connect(m, load_unit.deserializer, deserializer.cmd)
        wiring.connect(m, deserializer.vectors, load_unit.vectors)
        wiring.connect(m, load_unit.act_write, act_buffer.write_port())
        wiring.connect(m, load_unit.weight_write, weight_buffer.write_port())
        m.d.comb += [
            load_unit.error_latched.eq(controller.error != 0),
            controller.param_error.eq(load_unit.param_error),
        ]

        # Matmul: buffers -> readers -> array -> accumulator.
        wiring.connect(m, weight_reader.port, weight_buffer.read_port())
        wiring.connect(m, act_reader.port, act_buffer.read_port())
        wiring.connect(m, matmul_unit.weight_requests, weight_reader.requests)
        wiring.connect(m, matmul_unit.act_requests, act_reader.requests)
        m.d.comb += [
            array.weight_in.payload.values.eq(weight_reader.responses.payload.data),
            array.weight_in.payload.bank.eq(weight_reader.responses.payload.tag.bank),
            array.weight_in.valid.eq(weight_reader.responses.valid),
            weight_reader.responses.ready.eq(array.weight_in.ready),
            array.act_in.payload.values.eq(act_reader.responses.payload.data),
            array.act_in.payload.tag.eq(act_reader.responses.payload.tag.acc),
            array.act_in.payload.bank.eq(act_reader.responses.payload.tag.bank),
            array.act_in.valid.eq(act_reader.responses.valid),
            act_reader.responses.ready.eq(array.act_in.ready),
            matmul_unit.weights_pending.eq(weight_reader.busy),
            matmul_unit.slot_written.eq(load_unit.slot_written),
            matmul_unit.written_slot.eq(load_unit.written_slot),
        ]
        wiring.connect(m, array.result, accumulator.results)

        # Store: accumulator -> requantizer -> serializer -> data-out.
        wiring.connect(m, store_unit.read_requests, accumulator.read_requests)
        m.d.comb += [
            requantizer.rows.payload.values.eq(accumulator.read_responses.payload.data),
            requantizer.rows.payload.raw.eq(accumulator.read_responses.payload.tag.raw),
            requantizer.rows.payload.n.eq(accumulator.read_responses.payload.tag.n),
            requantizer.rows.valid.eq(accumulator.read_responses.valid),
            accumulator.read_responses.ready.eq(requantizer.rows.ready),
            # The set through a Mux: indexed by a signal, both sets (2 x cols records)
            # would be shifted whole, which a simulator does word by word every cycle.
            requantizer.params.eq(Mux(store_unit.current.param_set, load_unit.params[1],
                                      load_unit.params[0])),
        ]
        # Rows and status records share the serializer; the controller sends a status
        # record only once the store path is empty, so the two never compete.
        with m.If(requantizer.vectors.valid):
            wiring.connect(m, requantizer.vectors, serializer.vectors)
        with m.Else():
            wiring.connect(m, controller.status_record, serializer.vectors)
        # The skid buffer registers data-out's ready before it reaches the serializer.
        wiring.connect(m, serializer.beats, data_out_buffer.input)
        wiring.connect(m, data_out_buffer.output, wiring.flipped(self.data_out))

        datapath_busy = Signal()
        m.d.comb += [
            datapath_busy.eq(load_unit.busy | deserializer.busy | matmul_unit.busy
                             | store_unit.busy | array.busy | accumulator.busy
                             | weight_reader.busy | act_reader.busy | requantizer.busy
                             | serializer.busy | data_out_buffer.busy),
            controller.load_idle.eq(~(load_unit.busy | deserializer.busy)),
            controller.queued_rows.eq(matmul_unit.queued_rows),
            controller.streaming_rows.eq(matmul_unit.streaming_rows),
            controller.preloading.eq(matmul_unit.preloading),
            controller.compute_drained.eq(~(matmul_unit.busy | weight_reader.busy
                                            | act_reader.busy | array.busy
                                            | accumulator.writing)),
            controller.store_idle.eq(~(store_unit.busy | accumulator.reading
                                       | requantizer.busy)),
            controller.all_idle.eq(~datapath_busy),
            controller.store_current.eq(store_unit.current),
            controller.store_end.eq(store_unit.current_end),
            self.busy.eq(controller.busy | datapath_busy),
            self.error.eq(controller.error),
            self.error_opcode.eq(controller.error_opcode),
            self.executed.eq(controller.executed),
        ]
        with m.If(self.busy | self.commands.valid):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(array.act_in.valid & array.act_in.ready):
            m.d.sync += self.array_cycles.eq(self.array_cycles + 1)
        return m
