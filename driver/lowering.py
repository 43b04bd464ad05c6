"""Lowering layers to the chip's command stream.

A layer of any size runs as tiles that fit the chip: its reduction dimension K in
tiles of ``rows`` (accumulated in the accumulator), its outputs N in tiles of
``cols`` (one requantization record per column), and the batch M in blocks that fit
the activation buffer and the accumulator.  Each layer of a chain is one
:class:`ChipPass`: one command stream and one data-in stream for the backend.  The
activations between layers stay int8/uint8: one pass's requantized output is the
next pass's input, unchanged.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hw.beats import pack_rows, row_stride, unpack_rows
from hw.config import PARAM_RECORD_BYTES, STATUS_RECORD_BYTES, NpuConfig, check_config
from hw.isa import (
    LoadAct,
    LoadParams,
    LoadWeight,
    Matmul,
    ParamRecord,
    ReadStatus,
    StatusRecord,
    Store,
)
from sim.cycle_model import CycleModel

from .layers import HOST_LAYERS, IntegerMatMul, check_chain

__all__ = ["lower", "lower_matmul", "model_cycles", "zero_tile_savings", "LoweredChain",
           "ChipPass", "BlockCommands", "HostPass", "ActivationBlock", "OutputBlock", "tile_plan",
           "TilePlan"]


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
    n_group: int = None  #: with the blocked schedule (large layers): output tiles that
                         #: accumulate together while K groups of activations stream
                         #: through two activation regions; None: every K tile of a
                         #: block stays in the activation buffer


def _tiles(total, size):
    return tuple((start, min(size, total - start)) for start in range(0, total, size))


#: A MATMUL streams at least this many array heights of rows in the blocked schedule:
#: long enough that the next tile's load and preload hide behind it.
_BLOCKED_HEIGHTS = 16


def _blocked_plan(k_tiles, n_tiles, batch, config, limit):
    """The blocked :class:`TilePlan`: M blocks of up to ``_BLOCKED_HEIGHTS`` array heights;
    two output tiles (one per parameter set) accumulate, each in the next of at least
    three accumulator regions (a pair's stores drain while the next pair computes), while
    the block's K groups load in turn into two activation regions, the next group while
    this one streams."""
    c = config
    m_block = min(batch, _BLOCKED_HEIGHTS * c.rows, c.acc_depth // 3, c.act_depth // 2, limit)
    k_group = min(len(k_tiles), c.act_depth // 2 // m_block)
    return TilePlan(k_tiles=k_tiles, n_tiles=n_tiles, m_block=m_block, k_group=k_group,
                    resident=False, acc_banks=c.acc_depth // m_block, act_banks=2,
                    n_group=min(2, len(n_tiles)))


def tile_plan(in_features, out_features, batch, config):
    """The :class:`TilePlan` of a layer; the batch block is as large as the buffers allow.

    When every K tile of a block fits the activation buffer with blocks long enough to
    hide the weights' loads, the block's activations load once and every weight tile
    streams past them; else the blocked schedule (:func:`_blocked_plan`) reloads groups
    of K tiles per pair of output tiles.
    """
    c = config
    # A block's rows are the count of its LOAD_ACTs, MATMULs and STOREs.
    limit = min(c.act_depth, c.acc_depth, *(cls.field("count").max
                                            for cls in (LoadAct, Matmul, Store)))
    k_tiles, n_tiles = _tiles(in_features, c.rows), _tiles(out_features, c.cols)
    classic = _classic_plan(k_tiles, n_tiles, batch, c, limit)
    # Weights that stay in the weight buffer across blocks beat any reloading.
    if (not classic.resident and min(batch, limit, c.acc_depth // 3, c.act_depth // 2) >= 4 * c.rows
            and c.act_depth // len(k_tiles) <= min(batch, _BLOCKED_HEIGHTS * c.rows)):
        blocked = _blocked_plan(k_tiles, n_tiles, batch, c, limit)
        # Reloading activations must leave the data port room (a 16-byte vector takes
        # two beats of an 8-byte port per output-tile pair), unless the blocks without
        # reloading are so short that their weights load the port even more.
        if (_port_load(blocked, c) < 0.9
                or _port_load(blocked, c) < _port_load(classic, c)):
            return blocked
    return classic


def _port_load(plan, config):
    """Data-in beats per streamed row of a plan: the weight tile of each MATMUL over its
    rows, plus, in the blocked schedule, the activations reloaded per output-tile pair."""
    c = config
    load = (c.rows * c.beats(c.cols) + 3) / plan.m_block
    if plan.n_group is not None and plan.k_group < len(plan.k_tiles):
        load += c.beats(c.rows) / plan.n_group
    return load


def _classic_plan(k_tiles, n_tiles, batch, c, limit):
    """The :class:`TilePlan` that keeps every K tile of a block in the activation buffer
    (when they fit)."""
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


@dataclass(frozen=True)
class BlockCommands:
    """The commands of one M block of a :class:`ChipPass`, and where their data comes from.

    ``sources`` holds one entry per instruction: ``None``, or what it takes from the
    data-in stream: ``("act", later, k0, k)`` (features ``k0..k0+k`` of this block's
    rows, or with ``later`` of the next block's), ``("weight", k0, k, n0, n)`` or
    ``("params", n0, n)``.  Blocks with the same commands are one object, so a
    repetitive pass is cheap to lower and to replay.
    """
    instructions: tuple
    sources: tuple


@dataclass
class ChipPass:
    """A matrix multiply over one batch: a command stream and the recipe for its data stream.

    The commands come as :attr:`blocks`, one :class:`BlockCommands` per M block (each
    block's commands end before its last STORE, which follows the next block's first
    weight load), then :attr:`tail`.  ``outputs`` lists, in order, what each ``STORE``
    sends back.
    """
    name: str
    batch: int
    config: NpuConfig
    plan: TilePlan
    weight: np.ndarray            #: [K, N] bytes as the chip loads them
    records: tuple                #: one ParamRecord per output column, or empty
    raw: bool                     #: STOREs send int32 accumulators
    output_signed: bool           #: requantized outputs are int8 (else uint8)
    blocks: list
    tail: tuple
    layer: object = None          #: the layer lowered, if any
    skipped: frozenset = frozenset()  #: (k tile, n tile) weight tiles skipped as all zero
    layer_batch: int = None       #: input rows of the layer (``batch`` counts matmul rows)

    @property
    def in_features(self):
        return self.weight.shape[0]

    @property
    def out_features(self):
        return self.weight.shape[1]

    @property
    def output_dtype(self):
        """What :meth:`decode` returns: int32 when raw, else int8 or uint8."""
        return np.dtype(np.int32 if self.raw else np.int8 if self.output_signed else np.uint8)

    @cached_property
    def instructions(self):
        """Every instruction, in order."""
        return [ins for block in self.blocks for ins in block.instructions] + list(self.tail)

    @property
    def commands(self):
        """The 64-bit command words."""
        return [ins.encode() for ins in self.instructions]

    @property
    def macs(self):
        """Useful multiply-accumulates (padding lanes excluded)."""
        return self.batch * self.in_features * self.out_features

    def _rows(self, block):
        m0 = block * self.plan.m_block
        return m0, min(self.plan.m_block, self.batch - m0)

    @cached_property
    def segments(self):
        """The data-in stream in order: bytes known when lowering (weights, requantization
        records) and :class:`ActivationBlock` slices of the input."""
        config, segments = self.config, []
        record_rows = np.frombuffer(b"".join(r.encode() for r in self.records),
                                    dtype=np.uint8).reshape(-1, PARAM_RECORD_BYTES)
        for index, block in enumerate(self.blocks):
            for source in block.sources:
                if source is None:
                    continue
                kind, *where = source
                if kind == "act":
                    later, k0, k = where
                    m0, m = self._rows(index + later)
                    segments.append(ActivationBlock(m0=m0, m=m, k0=k0, k=k))
                elif kind == "weight":
                    k0, k, n0, n = where
                    segments.append(pack_rows(config, self.weight[k0:k0 + k, n0:n0 + n]))
                else:
                    n0, n = where
                    segments.append(pack_rows(config, record_rows[n0:n0 + n]))
        return segments

    @cached_property
    def outputs(self):
        """What each STORE sends back, in order: an :class:`OutputBlock` per output tile."""
        return [OutputBlock(m0=m0, m=m, n0=n0, n=n)
                for m0, m in map(self._rows, range(len(self.blocks)))
                for n0, n in self.plan.n_tiles]

    def data_in(self, x):
        """The data-in stream for input ``x`` [batch, in_features] of the input type."""
        x = np.asarray(x)
        if x.shape != (self.batch, self.in_features):
            raise ValueError(f"{self.name}: the pass was lowered for input shape "
                             f"{(self.batch, self.in_features)}, not {x.shape}")
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
        """The product [batch, out_features] from the data-out bytes (see :attr:`output_dtype`)."""
        y = np.empty((self.batch, self.out_features), dtype=self.output_dtype)
        width, pos = y.dtype.itemsize, 0
        for out in self.outputs:
            block = unpack_rows(self.config, data_out, out.m, width * out.n, offset=pos)
            y[out.m0:out.m0 + out.m, out.n0:out.n0 + out.n] = (
                block.copy().view("<i4") if self.raw else block.view(y.dtype))
            pos += out.m * row_stride(self.config, width * out.n)
        return y


@dataclass
class HostPass:
    """A host layer (:data:`~driver.layers.HOST_LAYERS`) the driver applies on the host."""
    layer: object
    batch: int
    macs = 0


def _issue_owed(loads, emit, *, index, group_size):
    """Issue the pending loads of a group loading a K tile at a time (one per tile, in
    order, each normally issued after the MATMUL before its tile) that tile ``index`` of
    ``group_size`` still waits for: tiles skipped before it issued no MATMUL."""
    while len(loads) > group_size - 1 - index:
        emit(*loads.pop(0))


def _block_commands(plan, config, *, signs, params, raw, skip, m, base, own_loads, upcoming,
                    tile, slot, load_weights, pending_store):
    """The commands of one M block of ``m`` rows whose activations sit at ``base``.

    ``own_loads``: the block loads its activations first (else the previous block
    prefetched them); ``upcoming``: ``(rows, base)`` of the next block, whose loads
    are spread over this block's MATMULs; ``tile`` and ``slot``: output tiles and
    weight slots used so far (they alternate parameter sets, accumulator regions and
    weight slots); ``pending_store``: the previous block's last STORE; ``skip``: the
    ``(k tile, n tile)`` indices whose weights are all zero (no load, no matmul).

    Returns the :class:`BlockCommands`, this block's last STORE, and ``tile`` and
    ``slot`` after it.
    """
    x_signed, w_signed = signs
    groups = [plan.k_tiles[i:i + plan.k_group] for i in range(0, len(plan.k_tiles), plan.k_group)]
    ins, sources = [], []

    def emit(instruction, source=None):
        ins.append(instruction)
        sources.append(source)

    def act_loads(rows, at, later, group):
        """The LOAD_ACTs of one K group of a block of ``rows`` rows at ``at``."""
        return [(LoadAct(addr=at + index * rows, count=rows, length=k, signed=x_signed),
                 ("act", later, k0, k)) for index, (k0, k) in enumerate(group)]

    upcoming = act_loads(*upcoming, 1, groups[0]) if upcoming is not None else []
    spacing = max(1, len(plan.n_tiles) * len(plan.k_tiles) // max(1, len(upcoming)))
    # Own loads go a K tile at a time, each while the MATMUL before it streams, so the
    # array starts after one tile rather than the whole block.
    own = act_loads(m, base, 0, groups[0]) if own_loads else []
    if own:
        emit(*own.pop(0))
    issued = 0
    for j, (n0, n) in enumerate(plan.n_tiles):
        param_set = tile % 2
        acc_addr = (tile % plan.acc_banks) * plan.m_block
        tile += 1
        if params:
            # Weight loading subtracts the zero points of the records loaded before it.
            emit(LoadParams(count=n, param_set=param_set), ("params", n0, n))
        t = done = 0
        for group in groups:
            if len(groups) > 1:
                for load in act_loads(m, base, 0, group):
                    emit(*load)
            for index, (k0, k) in enumerate(group):
                t += 1
                if (t - 1, j) in skip:
                    continue
                _issue_owed(own, emit, index=index, group_size=len(group))
                if plan.resident:
                    this_slot = j * len(plan.k_tiles) + t - 1
                else:
                    this_slot, slot = slot % config.weight_tiles, slot + 1
                if load_weights:
                    emit(LoadWeight(slot=this_slot, k=k, n=n, signed=w_signed,
                                    param_set=param_set), ("weight", k0, k, n0, n))
                if pending_store is not None:
                    # The previous tile drains through the store path while this one
                    # computes: another parameter set, another accumulator region.
                    emit(pending_store)
                    pending_store = None
                emit(Matmul(act_addr=base + index * m, count=m, slot=this_slot,
                            acc_addr=acc_addr, accumulate=int(done > 0)))
                done += 1
                issued += 1
                if own:
                    emit(*own.pop(0))
                if upcoming and issued % spacing == 0:
                    emit(*upcoming.pop(0))
        pending_store = Store(acc_addr=acc_addr, count=m, n=n, raw=int(raw),
                              param_set=param_set)
    for load in upcoming:
        emit(*load)
    return BlockCommands(tuple(ins), tuple(sources)), pending_store, tile, slot


def _blocked_block(plan, config, *, signs, params, raw, skip, m, next_m, region, bank, slot,
                   pending, first):
    """The commands of one M block of ``m`` rows in the blocked schedule.

    The block runs its output tiles in pairs (a *unit*, parameter sets 0 and 1, each
    tile in the next of ``plan.acc_banks`` accumulator regions); each unit walks the
    block's K groups, each group's activations in one of two activation regions, the
    next group's loads spread over this group's MATMULs (with one K group, the block's
    activations load once). ``region``: the region of the block's first group (already
    loaded unless ``first``); ``next_m``: rows of the next block (whose first group
    loads during this block's last), if any; ``bank`` and ``slot``: the accumulator
    region and weight slot to use next; ``pending``: STOREs of the previous block still
    to be issued; ``skip``: the ``(k tile, n tile)`` indices whose weights are all zero
    (no load, no matmul).

    Returns the :class:`BlockCommands`, the STOREs left pending, and ``region``,
    ``bank`` and ``slot`` for the next block.
    """
    x_signed, w_signed = signs
    k_groups = [plan.k_tiles[i:i + plan.k_group]
                for i in range(0, len(plan.k_tiles), plan.k_group)]
    units = [plan.n_tiles[j:j + plan.n_group] for j in range(0, len(plan.n_tiles), plan.n_group)]
    region_rows = plan.k_group * plan.m_block
    reload = len(k_groups) > 1
    ins, sources = [], []
    pending = list(pending)

    def emit(instruction, source=None):
        ins.append(instruction)
        sources.append(source)

    def act_loads(rows, at, later, group):
        return [(LoadAct(addr=at * region_rows + index * rows, count=rows, length=k,
                         signed=x_signed), ("act", later, k0, k))
                for index, (k0, k) in enumerate(group)]

    # The very first group loads a K tile at a time, each while the MATMUL before it
    # streams, so the array starts after one tile rather than a whole group.
    first_loads = act_loads(m, region, 0, k_groups[0]) if first else []
    if first_loads:
        emit(*first_loads.pop(0))
    visits = [(u, g) for u in range(len(units)) for g in range(len(k_groups))]
    for number, (u, g) in enumerate(visits):
        last_visit = number + 1 == len(visits)
        if not last_visit and reload:
            upcoming = act_loads(m, 1 - region, 0, k_groups[visits[number + 1][1]])
        elif last_visit and next_m:
            upcoming = act_loads(next_m, 1 - region, 1, k_groups[0])
        else:
            upcoming = []
        issued = 0
        if g == 0:
            done = [0] * len(units[u])
        for jj, (n0, n) in enumerate(units[u]):
            acc_addr = (bank + jj) % plan.acc_banks * plan.m_block
            if g == 0 and params:
                if any(store.param_set == jj for store in pending):
                    # A store still pending uses this parameter set (after a lone tile,
                    # or a tile whose weights were all skipped so far): it goes first.
                    while pending:
                        emit(pending.pop(0))
                # Weight loading subtracts the zero points of the records loaded before it.
                emit(LoadParams(count=n, param_set=jj), ("params", n0, n))
            for index, (k0, k) in enumerate(k_groups[g]):
                if (g * plan.k_group + index, u * plan.n_group + jj) in skip:
                    continue
                _issue_owed(first_loads, emit, index=index, group_size=len(k_groups[g]))
                this_slot, slot = slot, (slot + 1) % config.weight_tiles
                emit(LoadWeight(slot=this_slot, k=k, n=n, signed=w_signed, param_set=jj),
                     ("weight", k0, k, n0, n))
                if pending:
                    # The previous unit's tile drains through the store path while
                    # this one computes: another accumulator region.
                    emit(pending.pop(0))
                emit(Matmul(act_addr=region * region_rows + index * m, count=m,
                            slot=this_slot, acc_addr=acc_addr,
                            accumulate=int(done[jj] > 0)))
                done[jj] += 1
                issued += 1
                if first_loads:
                    emit(*first_loads.pop(0))
                # Not while the last MATMUL of the previous group still reads the region.
                if upcoming and issued >= 2:
                    emit(*upcoming.pop(0))
            if g == len(k_groups) - 1:
                store = Store(acc_addr=acc_addr, count=m, n=n, raw=int(raw), param_set=jj)
                if jj + 1 < len(units[u]):
                    emit(store)   # drains while the unit's other tile computes
                else:
                    pending.append(store)
        for load in upcoming:
            emit(*load)
        if reload:
            # Tiles of the first group that this visit skipped: later visits load the
            # group again, and these rows would land on another group's.
            first_loads = []
        if g == len(k_groups) - 1:
            bank = (bank + len(units[u])) % plan.acc_banks
        if reload or last_visit:
            region = 1 - region
    return BlockCommands(tuple(ins), tuple(sources)), tuple(pending), region, bank, slot


def _zero_tiles(weight, records, plan):
    """``(k tile, n tile)`` indices whose weights all equal their column's zero point, but
    never every tile of an output tile (its first MATMUL clears the accumulator)."""
    zeros = np.array([r.weight_zero for r in records] if records else [0] * weight.shape[1],
                     dtype=np.int64)
    empty = weight.astype(np.int64) == zeros[None, :]
    skip = set()
    for j, (n0, n) in enumerate(plan.n_tiles):
        tiles = [i for i, (k0, k) in enumerate(plan.k_tiles)
                 if empty[k0:k0 + k, n0:n0 + n].all()]
        skip.update((i, j) for i in tiles[len(tiles) == len(plan.k_tiles):])
    return frozenset(skip)


def lower_matmul(weight, *, batch, config=None, act_signed, records=None, raw=None,
                 output_signed=False, skip_zero_tiles=False, name="matmul"):
    """Lower the matrix multiply ``A @ weight`` of a batch of ``A`` rows to a :class:`ChipPass`.

    This is the one place a matrix multiply becomes commands; :func:`lower` lowers each
    :class:`~driver.layers.QuantLinear` through it.

    Parameters
    ----------
    weight : numpy.ndarray [K, N] of uint8 or int8
        The weights as the chip loads them (row ``r``: input feature ``r``).
    batch : int
        Rows M of ``A``.
    config : NpuConfig, optional
        The chip's configuration (default: ``NpuConfig()``).
    act_signed : bool
        ``A`` is int8 (else uint8).
    records : sequence of hw.isa.ParamRecord, optional
        One requantization record per output column; they also carry the weight zero
        points.  Without them the chip's parameter sets are not loaded.
    raw : bool, optional
        STOREs send the int32 accumulators instead of requantized bytes (default: when
        there are no ``records``).
    output_signed : bool
        Requantized outputs are int8 (else uint8); only :meth:`ChipPass.decode` uses it.
    skip_zero_tiles : bool
        Skip weight tiles whose weights all equal their column's zero point (a pruned
        layer's): they add nothing, so they are not loaded and not multiplied.  An output
        tile keeps one MATMUL, which clears its accumulator.  A layer without such tiles
        lowers to the same commands either way.  Off by default, so the schedule does not
        depend on the weights (the benchmark lowers stand-in weights); :func:`lower` turns
        it on for layers.
    name : str
        Names the pass in messages.

    Raises
    ------
    TypeError
        If ``weight`` is not a 2-D uint8/int8 array or a record is not a ParamRecord.
    ValueError
        If ``batch`` is not positive, ``records`` do not match the columns, or a
        requantized pass has no records.
    """
    config = NpuConfig() if config is None else config
    check_config(config)
    if not isinstance(weight, np.ndarray) or weight.dtype not in (np.uint8, np.int8):
        raise TypeError(f"weight must be a uint8 or int8 NumPy array, not {weight!r}")
    if weight.ndim != 2 or 0 in weight.shape:
        raise ValueError(f"weight must have shape [K, N], not {weight.shape}")
    if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch <= 0:
        raise ValueError(f"batch must be a positive integer, not {batch!r}")
    records = () if records is None else tuple(records)
    raw = not records if raw is None else bool(raw)
    for record in records:
        if not isinstance(record, ParamRecord):
            raise TypeError(f"records must be ParamRecords, not {record!r}")
    if records and len(records) != weight.shape[1]:
        raise ValueError(f"{name}: {len(records)} records for {weight.shape[1]} columns")
    if not raw and not records:
        raise ValueError(f"{name}: a requantized matmul needs one record per column")
    batch = int(batch)
    k, n = weight.shape
    plan = tile_plan(k, n, batch, config)
    blocks = -(-batch // plan.m_block)
    # With two activation regions, the next block's activations load in small pieces
    # spread over this block's MATMULs, so the array never waits for a whole block.
    prefetch = plan.act_banks == 2 and plan.k_group == len(plan.k_tiles)
    signs = (int(act_signed), int(weight.dtype == np.int8))
    skip = _zero_tiles(weight, records, plan) if skip_zero_tiles else frozenset()
    made, pass_blocks = {}, []
    if plan.n_group is not None:
        state = dict(region=0, bank=0, slot=0, pending=())
        for block in range(blocks):
            m0 = block * plan.m_block
            m = min(plan.m_block, batch - m0)
            next_m = min(plan.m_block, batch - m0 - plan.m_block) if block + 1 < blocks else 0
            key = tuple(dict(m=m, next_m=next_m, first=block == 0, **state).items())
            if key not in made:
                made[key] = _blocked_block(plan, config, signs=signs, params=bool(records),
                                           raw=raw, skip=skip, **dict(key))
            commands, pending, region, bank, slot = made[key]
            state = dict(region=region, bank=bank, slot=slot, pending=pending)
            pass_blocks.append(commands)
        return ChipPass(name=name, batch=batch, config=config, plan=plan, weight=weight,
                        records=records, raw=raw, output_signed=bool(output_signed),
                        blocks=pass_blocks, tail=(*state["pending"], ReadStatus()),
                        skipped=skip)
    tile, slot, pending_store = 0, 0, None
    for block in range(blocks):
        m0 = block * plan.m_block
        m = min(plan.m_block, batch - m0)
        upcoming = None
        if prefetch and block + 1 < blocks:
            upcoming = (min(plan.m_block, batch - m0 - plan.m_block),
                        ((block + 1) % plan.act_banks) * plan.k_group * plan.m_block)
        # Everything the block's commands depend on; equal keys, equal commands.
        key = dict(m=m, base=(block % plan.act_banks) * plan.k_group * plan.m_block,
                   own_loads=plan.k_group == len(plan.k_tiles) and (block == 0 or not prefetch),
                   upcoming=upcoming, tile=tile % 2,
                   slot=0 if plan.resident else slot % config.weight_tiles,
                   load_weights=block == 0 or not plan.resident, pending_store=pending_store)
        frozen = tuple(key.items())
        if frozen not in made:
            made[frozen] = _block_commands(plan, config, signs=signs, params=bool(records),
                                           raw=raw, skip=skip, **key)
        commands, pending_store, tile_after, slot_after = made[frozen]
        tile += tile_after - key["tile"]
        slot += slot_after - key["slot"]
        pass_blocks.append(commands)
    return ChipPass(name=name, batch=batch, config=config, plan=plan, weight=weight,
                    records=records, raw=raw, output_signed=bool(output_signed),
                    blocks=pass_blocks, tail=(pending_store, ReadStatus()), skipped=skip)


def _lower_layer(layer, batch, config, skip_zero_tiles=True):
    """The :class:`ChipPass` of a chip layer: its one matrix multiply over its rows."""
    rows = layer.matmul_rows(batch)
    if isinstance(layer, IntegerMatMul):
        p = lower_matmul(np.ascontiguousarray(layer.matrix.T), batch=rows, config=config,
                         act_signed=layer.input.qtype.signed, records=layer.records, raw=True,
                         skip_zero_tiles=skip_zero_tiles, name=layer.name)
    else:
        linear = layer.matmul
        p = lower_matmul(np.ascontiguousarray(linear.weight.T), batch=rows, config=config,
                         act_signed=linear.input.qtype.signed, records=linear.records, raw=False,
                         output_signed=linear.output.qtype.signed,
                         skip_zero_tiles=skip_zero_tiles, name=layer.name)
    p.layer, p.layer_batch = layer, batch
    return p


def model_cycles(instructions, config):
    """Cycles of a command stream on an idle chip, from the cycle model."""
    model = CycleModel(config)
    for instruction in instructions:
        model.step(instruction)
    return model.cycles


def zero_tile_savings(chip_pass):
    """Cycles (from the cycle model) that skipping the pass's all-zero weight tiles saves:
    the same layer lowered without skipping, less the pass as lowered."""
    if not chip_pass.skipped:
        return 0
    dense = _lower_layer(chip_pass.layer, chip_pass.layer_batch, chip_pass.config,
                         skip_zero_tiles=False)
    return (model_cycles(dense.instructions, chip_pass.config)
            - model_cycles(chip_pass.instructions, chip_pass.config))


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
                         f"{', weights resident' if plan.resident else ''}"
                         f"{f', {len(p.skipped)} zero tile(s) skipped' if p.skipped else ''}; "
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
    layers : a layer or a list of layers (:data:`~driver.layers.CHIP_LAYERS`,
        :data:`~driver.layers.HOST_LAYERS`)
        A chain: each layer's output quantization must equal the next one's input.
    batch : int
        Rows of the input.
    config : NpuConfig, optional
        The chip's configuration (default: ``NpuConfig()``).

    All-zero weight tiles (a pruned layer's) are skipped (see :func:`lower_matmul`).
    """
    config = NpuConfig() if config is None else config
    check_config(config)
    if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch <= 0:
        raise ValueError(f"batch must be a positive integer, not {batch!r}")
    passes = []
    for layer in check_chain(layers):
        if isinstance(layer, HOST_LAYERS):
            passes.append(HostPass(layer=layer, batch=int(batch)))
        else:
            passes.append(_lower_layer(layer, int(batch), config))
    return LoweredChain(config=config, batch=int(batch), passes=passes)
