"""Lowering layers to the chip's command stream.

A layer of any size runs as tiles that fit the chip: its reduction dimension K in
tiles of ``rows`` (accumulated in the accumulator), its outputs N in tiles of
``cols`` (one requantization record per column), and the batch M in blocks that fit
the activation buffer and the accumulator.  Each layer of a chain is one
:class:`ChipPass`: one command stream and one data-in stream for the backend.  The
activations between layers stay int8/uint8: one pass's requantized output is the
next pass's input, unchanged.
"""

from dataclasses import dataclass, field

import numpy as np

from hw.beats import pack_rows, row_stride, unpack_rows
from hw.config import PARAM_RECORD_BYTES, STATUS_RECORD_BYTES, NpuConfig, check_config
from hw.isa import LoadAct, LoadParams, LoadWeight, Matmul, ReadStatus, StatusRecord, Store

from .layers import ColumnTable, QuantLinear, check_chain

__all__ = ["lower", "LoweredChain", "ChipPass", "HostPass", "ActivationBlock", "OutputBlock",
           "tile_plan", "TilePlan"]


@dataclass(frozen=True)
class ActivationBlock:
    """Rows ``m0..m0+m`` and features ``k0..k0+k`` of a pass's input, sent by ``LOAD_ACT``."""
    m0: int
    m: int
    k0: int
    k: int


@dataclass(frozen=True)
class OutputBlock:
    """Rows ``m0..m0+m`` and outputs ``n0..n0+n`` that one ``STORE`` sends back."""
    m0: int
    m: int
    n0: int
    n: int


@dataclass(frozen=True)
class TilePlan:
    """How a layer of ``batch`` rows is cut into tiles for a configuration."""
    k_tiles: tuple       #: (k0, k) per tile of input features
    n_tiles: tuple       #: (n0, n) per tile of output features
    m_block: int         #: rows per block of the batch
    k_group: int         #: K tiles whose activations sit in the buffer at once
    resident: bool       #: all weight tiles stay in the weight buffer across M blocks
    acc_banks: int       #: accumulator regions output tiles use in turn (2 let a store
                         #: drain while the next tile computes)
    act_banks: int = 1   #: activation regions M blocks use in turn (2 let the next
                         #: block load while this one computes)


def _tiles(total, size):
    return tuple((start, min(size, total - start)) for start in range(0, total, size))


def tile_plan(in_features, out_features, batch, config):
    """The :class:`TilePlan` of a layer; the batch block is as large as the buffers allow."""
    c = config
    # Counts are 16-bit command fields.
    limit = min(c.act_depth, c.acc_depth, (1 << 16) - 1)
    k_tiles, n_tiles = _tiles(in_features, c.rows), _tiles(out_features, c.cols)
    act_banks = 1
    if len(k_tiles) <= c.act_depth:
        # Keep every K tile of a block resident so weights stream past it once per block.
        capacity = c.act_depth // len(k_tiles)
        m_block = min(batch, capacity, limit)
        k_group = len(k_tiles)
        # With several blocks, two half-size regions let the next block's activations
        # load while this block streams; worth it while a block still streams long
        # enough to hide the next weight tile's load (about two array heights).
        half = min(capacity // 2, limit)
        if batch > m_block and half >= 2 * c.rows:
            m_block, act_banks = half, 2
    else:
        m_block = min(batch, limit)
        k_group = c.act_depth // m_block
    blocks = -(-batch // m_block)
    resident = (k_group == len(k_tiles) and blocks > 1
                and len(k_tiles) * len(n_tiles) <= c.weight_tiles)
    acc_banks = 2 if 2 * m_block <= c.acc_depth else 1
    return TilePlan(k_tiles=k_tiles, n_tiles=n_tiles, m_block=m_block, k_group=k_group,
                    resident=resident, acc_banks=acc_banks, act_banks=act_banks)


@dataclass
class ChipPass:
    """One layer over one batch: a command stream and the recipe for its data stream.

    ``segments`` lists the data-in stream in order: bytes known when lowering (weights,
    requantization records) and :class:`ActivationBlock` slices of the input.
    ``outputs`` lists, in order, what each ``STORE`` sends back.
    """
    layer: QuantLinear
    batch: int
    config: NpuConfig
    plan: TilePlan
    instructions: list = field(default_factory=list)
    segments: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    @property
    def commands(self):
        """The 64-bit command words."""
        return [ins.encode() for ins in self.instructions]

    @property
    def macs(self):
        """Useful multiply-accumulates (padding lanes excluded)."""
        return self.layer.macs(self.batch)

    def data_in(self, x):
        """The data-in stream for input ``x`` [batch, in_features] of the layer's input type."""
        x = np.asarray(x)
        if x.shape != (self.batch, self.layer.in_features):
            raise ValueError(f"{self.layer.name}: the pass was lowered for input shape "
                             f"{(self.batch, self.layer.in_features)}, not {x.shape}")
        parts = []
        for seg in self.segments:
            if isinstance(seg, ActivationBlock):
                block = x[seg.m0:seg.m0 + seg.m, seg.k0:seg.k0 + seg.k]
                parts.append(pack_rows(self.config, block))
            else:
                parts.append(seg)
        return b"".join(parts)

    @property
    def status_bytes(self):
        return row_stride(self.config, STATUS_RECORD_BYTES)

    @property
    def data_out_bytes(self):
        """Bytes the chip sends when the pass runs without error."""
        return sum(ins.data_out_bytes(self.config) for ins in self.instructions)

    def status(self, data_out):
        """The status record the pass's closing ``READ_STATUS`` sent (the last beats)."""
        if len(data_out) < self.status_bytes:
            return None
        return StatusRecord.decode(data_out[-self.status_bytes:])

    def decode(self, data_out):
        """The layer's output [batch, out_features] from the data-out bytes."""
        y = np.empty((self.batch, self.layer.out_features), dtype=self.layer.output.qtype.dtype)
        pos = 0
        for out in self.outputs:
            block = unpack_rows(self.config, data_out, out.m, out.n, offset=pos)
            y[out.m0:out.m0 + out.m, out.n0:out.n0 + out.n] = block.view(y.dtype)
            pos += out.m * row_stride(self.config, out.n)
        return y


@dataclass
class HostPass:
    """A :class:`~driver.layers.ColumnTable` the driver applies on the host."""
    layer: ColumnTable
    batch: int
    macs = 0


def _lower_linear(layer, batch, config):
    plan = tile_plan(layer.in_features, layer.out_features, batch, config)
    p = ChipPass(layer=layer, batch=batch, config=config, plan=plan)
    ins, segs = p.instructions, p.segments
    x_signed, w_signed = int(layer.input.qtype.signed), int(layer.weight_type.signed)
    weight_t = np.ascontiguousarray(layer.weight.T)     # row r: input feature r, as the chip loads
    records = [r.encode() for r in layer.records]
    groups = [plan.k_tiles[i:i + plan.k_group] for i in range(0, len(plan.k_tiles), plan.k_group)]
    record_rows = np.frombuffer(b"".join(records), dtype=np.uint8).reshape(-1, PARAM_RECORD_BYTES)

    def act_loads(block, group):
        """The LOAD_ACTs (and their data) of one block's K group."""
        m0 = block * plan.m_block
        m = min(plan.m_block, batch - m0)
        base = (block % plan.act_banks) * plan.k_group * plan.m_block
        return [(LoadAct(addr=base + index * m, count=m, length=k, signed=x_signed),
                 ActivationBlock(m0=m0, m=m, k0=k0, k=k)) for index, (k0, k) in enumerate(group)]

    def emit(loads):
        for instruction, segment in loads:
            ins.append(instruction)
            segs.append(segment)

    blocks = -(-batch // plan.m_block)
    matmuls_per_block = len(plan.n_tiles) * len(plan.k_tiles)
    # With two activation regions, the next block's activations load in small pieces
    # spread over this block's MATMULs, so the array never waits for a whole block.
    prefetch = plan.act_banks == 2 and len(groups) == 1
    next_slot = 0
    tile = 0                 # output tiles so far: they alternate parameter sets and regions
    pending_store = None     # a tile's STORE waits until the next tile has weights in flight
    if len(groups) == 1:
        emit(act_loads(0, groups[0]))
    for block in range(blocks):
        m0 = block * plan.m_block
        m = min(plan.m_block, batch - m0)
        act_base = (block % plan.act_banks) * plan.k_group * plan.m_block
        upcoming = act_loads(block + 1, groups[0]) if prefetch and block + 1 < blocks else []
        spacing = max(1, matmuls_per_block // max(1, len(upcoming)))
        if len(groups) == 1 and block > 0 and not prefetch:
            emit(act_loads(block, groups[0]))
        issued = 0
        for j, (n0, n) in enumerate(plan.n_tiles):
            param_set = tile % 2
            acc_addr = (tile % plan.acc_banks) * plan.m_block
            tile += 1
            # Weight loading subtracts the zero points of the records loaded before it.
            ins.append(LoadParams(count=n, param_set=param_set))
            segs.append(pack_rows(config, record_rows[n0:n0 + n]))
            t = 0
            for group in groups:
                if len(groups) > 1:
                    emit(act_loads(block, group))
                for index, (k0, k) in enumerate(group):
                    if plan.resident:
                        slot, load = j * len(plan.k_tiles) + t, block == 0
                    else:
                        slot, load = next_slot % config.weight_tiles, True
                        next_slot += 1
                    if load:
                        ins.append(LoadWeight(slot=slot, k=k, n=n, signed=w_signed,
                                              param_set=param_set))
                        segs.append(pack_rows(config, weight_t[k0:k0 + k, n0:n0 + n]))
                    if pending_store is not None:
                        # The previous tile drains through the store path while this one
                        # computes: another parameter set, another accumulator region.
                        ins.append(pending_store)
                        pending_store = None
                    ins.append(Matmul(act_addr=act_base + index * m, count=m, slot=slot,
                                      acc_addr=acc_addr, accumulate=int(t > 0)))
                    t += 1
                    issued += 1
                    if upcoming and issued % spacing == 0:
                        emit(upcoming[:1])
                        upcoming = upcoming[1:]
            pending_store = Store(acc_addr=acc_addr, count=m, n=n, raw=0, param_set=param_set)
            p.outputs.append(OutputBlock(m0=m0, m=m, n0=n0, n=n))
        emit(upcoming)
    ins.append(pending_store)
    ins.append(ReadStatus())
    return p


@dataclass
class LoweredChain:
    """A chain of layers lowered for one batch size and one configuration.

    ``passes`` holds one :class:`ChipPass` per chip layer (one backend call each) and a
    :class:`HostPass` for each host-side table.
    """
    config: NpuConfig
    batch: int
    passes: list

    @property
    def layers(self):
        return [p.layer for p in self.passes]

    @property
    def chip_passes(self):
        return [p for p in self.passes if isinstance(p, ChipPass)]

    @property
    def commands(self):
        """Every command word of every chip pass, in order."""
        return [word for p in self.chip_passes for word in p.commands]

    @property
    def macs(self):
        return sum(p.macs for p in self.passes)

    def disassemble(self):
        """The command streams as text, one instruction a line, with a header per pass."""
        lines = [f"; {len(self.passes)} pass(es), batch {self.batch}, {self.config}"]
        for number, p in enumerate(self.passes, 1):
            if isinstance(p, HostPass):
                lines.append(f"; pass {number}: {p.layer!r} on the host")
                continue
            plan = p.plan
            lines.append(f"; pass {number}: {p.layer!r}: {len(plan.k_tiles)} K tile(s) x "
                         f"{len(plan.n_tiles)} N tile(s), M blocks of {plan.m_block}"
                         f"{', weights resident' if plan.resident else ''}; "
                         f"{len(p.instructions)} commands, "
                         f"{sum(len(s) if isinstance(s, bytes) else 0 for s in p.segments)} "
                         "constant data bytes")
            for address, ins in enumerate(p.instructions):
                lines.append(f"{address:6d}  {ins.encode():016x}  {ins}")
        return "\n".join(lines)


def lower(layers, *, batch, config=None):
    """Lower a layer or a chain of layers to a :class:`LoweredChain`.

    Parameters
    ----------
    layers : QuantLinear, ColumnTable or list of them
        A chain: each layer's output quantization must equal the next one's input.
    batch : int
        Rows of the input.
    config : NpuConfig, optional
        The chip's configuration (default: ``NpuConfig()``).
    """
    config = NpuConfig() if config is None else config
    check_config(config)
    if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch <= 0:
        raise ValueError(f"batch must be a positive integer, not {batch!r}")
    passes = []
    for layer in check_chain(layers):
        if isinstance(layer, ColumnTable):
            passes.append(HostPass(layer=layer, batch=int(batch)))
        else:
            passes.append(_lower_linear(layer, int(batch), config))
    return LoweredChain(config=config, batch=int(batch), passes=passes)
