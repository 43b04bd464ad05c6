"""Hand-written and random command streams for tests that need a specific sequence.

A :class:`CommandStream` is what the host pushes: command words and the data-in bytes
they consume.  Matrix multiplies are tiled by the driver's lowering
(``driver.lowering.lower_matmul``), the only tiler.
"""

import dataclasses
import itertools
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from hw import isa
from hw.beats import pack_rows
from hw.config import NpuConfig

__all__ = ["CommandStream", "random_params", "random_program", "valid_instruction",
           "invalid_instruction"]


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
