"""Command-stream builders for testbenches, the demo and benchmarks.

A :class:`CommandStream` is what the host pushes: command words and the data-in bytes
they consume.  :func:`gemm_program` tiles a whole quantized matrix multiply
``requant(A @ (W - z_w) + bias)`` for any M, K and N onto a configuration.
"""

import dataclasses
import itertools
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from hw import isa
from hw.beats import pack_rows
from hw.config import NpuConfig

__all__ = ["CommandStream", "gemm_schedule", "gemm_program", "random_params",
           "random_program", "valid_instruction", "invalid_instruction"]


@dataclass
class CommandStream:
    """Commands and the data-in bytes they consume, built up instruction by instruction."""
    config: NpuConfig
    instructions: list = field(default_factory=list)
    data_chunks: list = field(default_factory=list)

    def add(self, instruction, data=b""):
        self.instructions.append(instruction)
        if data:
            self.data_chunks.append(bytes(data))
        return self

    @property
    def commands(self):
        return [ins.encode() for ins in self.instructions]

    @property
    def data_in(self):
        return b"".join(self.data_chunks)

    def data_out_bytes(self):
        """Bytes the program sends to data-out when no error occurs."""
        return sum(ins.data_out_bytes(self.config) for ins in self.instructions)

    def disassemble(self):
        return "\n".join(str(ins) for ins in self.instructions)


def random_params(rng, n, *, output_signed=False):
    """Random but sensible per-column requantization records."""
    records = []
    for _ in range(n):
        zero = int(rng.integers(-128, 128)) if output_signed else int(rng.integers(0, 256))
        low, high = (-128, 127) if output_signed else (0, 255)
        activation = rng.integers(0, 3)  # none, ReLU, ReLU6-like bound
        if activation >= 1:
            low = max(low, zero)
        if activation == 2:
            high = min(high, zero + int(rng.integers(1, 100)))
        records.append(isa.ParamRecord(
            bias=int(rng.integers(-5000, 5000)),
            multiplier=int(rng.integers(1 << 30, 1 << 31)),
            shift=int(rng.integers(36, 44)),
            rounding=int(rng.integers(0, 4)),
            weight_zero=0,
            output_zero=zero, low=low, high=high))
    return records


def gemm_schedule(config, m, k, n, *, act_signed=False, weight_signed=True, raw=False,
                  with_params=True, m_tile=None):
    """The commands that tile an ``m`` x ``k`` x ``n`` matmul onto ``config``, in order.

    Yields ``(instruction, source)`` pairs; ``source`` says which data the instruction
    takes: ``("act", m0, rows, k0)``, ``("weight", k0, n0)``, ``("params", n0, columns)``
    or ``None``.  :func:`gemm_program` fills in the data; benchmarks use the schedule
    alone.

    Each M pass loads every K tile of its rows into the activation buffer, then runs
    the column tiles.  Column tiles alternate parameter sets and, where two fit,
    accumulator regions, and each tile's STORE follows the next tile's first weight
    load, so the store drains while the next tile computes.
    """
    rows, cols = config.rows, config.cols
    k_tiles = -(-k // rows)
    if m_tile is None:
        m_tile = min(config.act_depth // k_tiles, config.acc_depth)
    if m_tile < 1:
        raise ValueError(f"K={k} needs {k_tiles} activation vectors per row, more than "
                         f"act_depth={config.act_depth}")
    for m0 in range(0, m, m_tile):
        mt = min(m_tile, m - m0)
        for kt in range(k_tiles):
            k0 = kt * rows
            yield (isa.LoadAct(addr=kt * mt, count=mt, length=min(rows, k - k0),
                               signed=act_signed), ("act", m0, mt, k0))
        regions = 2 if 2 * mt <= config.acc_depth else 1
        pending_store = None
        for j, n0 in enumerate(range(0, n, cols)):
            nt = min(cols, n - n0)
            param_set, acc_addr = j % 2, (j % regions) * mt
            if with_params:
                yield isa.LoadParams(count=nt, param_set=param_set), ("params", n0, nt)
            for kt in range(k_tiles):
                k0 = kt * rows
                slot = kt % config.weight_tiles
                yield (isa.LoadWeight(slot=slot, k=min(rows, k - k0), n=nt,
                                      signed=weight_signed, param_set=param_set),
                       ("weight", k0, n0))
                if pending_store is not None:
                    yield pending_store, None
                    pending_store = None
                yield (isa.Matmul(act_addr=kt * mt, count=mt, slot=slot, acc_addr=acc_addr,
                                  accumulate=kt > 0), None)
            pending_store = isa.Store(acc_addr=acc_addr, count=mt, n=nt, raw=raw,
                                      param_set=param_set)
        yield pending_store, None


def gemm_program(config, a, w, params=None, *, act_signed=None, weight_signed=None,
                 raw=False, m_tile=None):
    """Tile ``a @ w`` (``a`` [M, K] uint8/int8, ``w`` [K, N] uint8/int8) onto ``config``.

    Parameters
    ----------
    params : list of ParamRecord, optional
        One per output column (N); needed unless ``raw``.
    raw : bool
        Store int32 accumulators instead of requantized bytes.
    m_tile : int, optional
        Rows per pass (default: as many as the buffers hold).

    Returns
    -------
    CommandStream
        Its data-out is the M x N result, row-major, each N-tile's rows padded to
        beats, N-tiles in order within each M-tile (see :func:`gemm_schedule`).
    """
    a, w = np.asarray(a), np.asarray(w)
    m, k = a.shape
    k2, n = w.shape
    if k != k2:
        raise ValueError(f"inner dimensions differ: a is {a.shape}, w is {w.shape}")
    act_signed = a.dtype == np.int8 if act_signed is None else act_signed
    weight_signed = w.dtype == np.int8 if weight_signed is None else weight_signed
    rows, cols = config.rows, config.cols
    program = CommandStream(config)
    for instruction, source in gemm_schedule(config, m, k, n, act_signed=act_signed,
                                             weight_signed=weight_signed, raw=raw,
                                             with_params=params is not None, m_tile=m_tile):
        data = b""
        if source is not None and source[0] == "act":
            _, m0, mt, k0 = source
            data = pack_rows(config, a[m0:m0 + mt, k0:k0 + rows])
        elif source is not None and source[0] == "weight":
            _, k0, n0 = source
            data = pack_rows(config, w[k0:k0 + rows, n0:n0 + cols])
        elif source is not None:
            _, n0, nt = source
            data = _records(config, params[n0:n0 + nt])
        program.add(instruction, data)
    return program


@cache
def _smallest_valid(cls, rules, config):
    """The first instruction of ``cls`` with every field 0 or 1 that passes ``rules``
    (its ``RULES``, a key of the cache)."""
    for values in itertools.product((0, 1), repeat=len(cls.FIELDS)):
        ins = cls(**{f.name: v for f, v in zip(cls.FIELDS, values, strict=True)})
        if ins.error(config) == isa.ErrorCode.NONE:
            return ins
    raise ValueError(f"no {cls.OPCODE.name} with fields of 0 and 1 passes its rules on "
                     f"{config}")


def valid_instruction(config, opcode, randint, *, sweeps=2):
    """A random instruction of ``opcode`` that passes its rules on ``config``.

    Taken from the rules alone (``Instruction.valid_values``): from the first instruction
    with fields of 0 and 1 that passes, each field in turn is redrawn from the values
    it may take with the others as they are, ``sweeps`` times over.  ``randint(low,
    high)`` (inclusive: ``random.Random.randint``, a Hypothesis draw, ``max`` or ``min``
    for the extremes) picks the index of each value among the valid ones.
    """
    cls = isa.INSTRUCTIONS[opcode]
    ins = _smallest_valid(cls, cls.RULES, config)
    for _ in range(sweeps):
        for f in ins.FIELDS:
            values = ins.valid_values(f.name, config)
            ins = dataclasses.replace(ins, **{f.name: int(values[randint(0, len(values) - 1)])})
    return ins


def invalid_instruction(config, opcode, randint):
    """An instruction of ``opcode`` that breaks one of its rules on ``config``, or None
    if it has no rules: a :func:`valid_instruction` with one field set to a value it may
    not take, half of the time one next to a value it may."""
    ins = valid_instruction(config, opcode, randint)
    breakable = []
    for f in ins.FIELDS:
        valid = ins.valid_values(f.name, config)
        if len(valid) <= f.max - f.min:
            breakable.append((f, valid))
    if not breakable:
        return None
    f, valid = breakable[randint(0, len(breakable) - 1)]
    invalid = np.setdiff1d(np.arange(f.min, f.max + 1), valid)
    edges = invalid[np.isin(invalid - 1, valid) | np.isin(invalid + 1, valid)]
    pool = edges if randint(0, 1) else invalid
    return dataclasses.replace(ins, **{f.name: int(pool[randint(0, len(pool) - 1)])})


#: The instructions that have rules, which a malformed command breaks.
_CHECKED = [op for op, cls in isa.INSTRUCTIONS.items() if cls.RULES]


def random_program(config, rng, length=25):
    """A random mix of every command, with the data each takes, for stress tests.

    Valid commands of random sizes and addresses drawn from their rules
    (:func:`valid_instruction`: overlapping buffer ranges, weight slots reused and
    rewritten, accumulate on and off), status reads, fences, error clears and two kinds
    of error: a command that breaks one of its rules (:func:`invalid_instruction`) and a
    requantization record with shift 0.
    """
    c = config
    program = CommandStream(config)

    def randint(low, high):
        return int(rng.integers(low, high + 1))

    def rows_of(shape):
        return pack_rows(c, rng.integers(0, 256, shape))

    for _ in range(length):
        kind = rng.choice(["act", "weight", "params", "matmul", "matmul", "matmul", "store",
                           "status", "fence", "nop", "clear", "error"])
        if kind == "act":
            ins = valid_instruction(c, isa.Opcode.LOAD_ACT, randint)
            program.add(ins, rows_of((ins.count, ins.length)))
        elif kind == "weight":
            ins = valid_instruction(c, isa.Opcode.LOAD_WEIGHT, randint)
            program.add(ins, rows_of((ins.k, ins.n)))
        elif kind == "params":
            ins = valid_instruction(c, isa.Opcode.LOAD_PARAMS, randint)
            program.add(ins, _records(c, random_params(rng, ins.count)))
        elif kind == "matmul":
            program.add(valid_instruction(c, isa.Opcode.MATMUL, randint))
        elif kind == "store":
            program.add(valid_instruction(c, isa.Opcode.STORE, randint))
        elif kind == "status":
            program.add(isa.ReadStatus())
        elif kind == "fence":
            program.add(isa.Fence())
        elif kind == "nop":
            program.add(isa.Nop())
        elif kind == "clear":
            program.add(isa.ClearError())
        elif rng.random() < 0.5:
            opcode = _CHECKED[randint(0, len(_CHECKED) - 1)]
            program.add(invalid_instruction(c, opcode, randint))   # takes no data
        else:
            zero = isa.ParamRecord(shift=1)
            records = [zero] * int(rng.integers(0, c.cols)) + [None]
            raw = b"".join(pack_rows(c, np.frombuffer(r.encode() if r else bytes(16),
                                                      np.uint8)[None]) for r in records)
            program.add(isa.LoadParams(count=len(records)), raw)             # BAD_PARAM
    return program


def _records(config, records):
    return b"".join(pack_rows(config, np.frombuffer(r.encode(), np.uint8)[None])
                    for r in records)
