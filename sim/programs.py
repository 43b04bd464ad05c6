"""Hand-written and random command streams for tests that need a specific sequence.

A :class:`CommandStream` is what the host pushes: command words and the data-in bytes
they consume.  Matrix multiplies are tiled by the driver's lowering
(``driver.lowering.lower_matmul``), the only tiler.
"""

from dataclasses import dataclass, field

import numpy as np

from hw import isa
from hw.beats import pack_rows
from hw.config import NpuConfig

__all__ = ["CommandStream", "random_params", "random_program"]


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


def random_program(config, rng, length=25):
    """A random mix of every command, with the data each takes, for stress tests.

    Valid commands of random sizes and addresses (overlapping buffer ranges, weight
    slots reused and rewritten, accumulate on and off), status reads, fences, error
    clears and two kinds of error: a zero-sized MATMUL and a requantization record
    with shift 0.
    """
    c = config
    program = CommandStream(config)

    def rows_of(shape):
        return pack_rows(c, rng.integers(0, 256, shape))

    def span(depth):
        count = int(rng.integers(1, depth + 1))
        return int(rng.integers(0, depth - count + 1)), count

    for _ in range(length):
        kind = rng.choice(["act", "weight", "params", "matmul", "matmul", "matmul", "store",
                           "status", "fence", "nop", "clear", "error"])
        if kind == "act":
            addr, count = span(c.act_depth)
            length_ = int(rng.integers(1, c.rows + 1))
            program.add(isa.LoadAct(addr=addr, count=count, length=length_,
                                    signed=int(rng.integers(0, 2))),
                        rows_of((count, length_)))
        elif kind == "weight":
            k, n = int(rng.integers(1, c.rows + 1)), int(rng.integers(1, c.cols + 1))
            program.add(isa.LoadWeight(slot=int(rng.integers(0, c.weight_tiles)), k=k, n=n,
                                       signed=int(rng.integers(0, 2)),
                                       param_set=int(rng.integers(0, 2))), rows_of((k, n)))
        elif kind == "params":
            records = random_params(rng, int(rng.integers(1, c.cols + 1)))
            program.add(isa.LoadParams(count=len(records), param_set=int(rng.integers(0, 2))),
                        _records(c, records))
        elif kind == "matmul":
            count = int(rng.integers(1, min(c.act_depth, c.acc_depth) + 1))
            program.add(isa.Matmul(act_addr=int(rng.integers(0, c.act_depth - count + 1)),
                                   count=count, slot=int(rng.integers(0, c.weight_tiles)),
                                   acc_addr=int(rng.integers(0, c.acc_depth - count + 1)),
                                   accumulate=int(rng.integers(0, 2))))
        elif kind == "store":
            addr, count = span(c.acc_depth)
            program.add(isa.Store(acc_addr=addr, count=count, n=int(rng.integers(1, c.cols + 1)),
                                  raw=int(rng.integers(0, 2)), param_set=int(rng.integers(0, 2))))
        elif kind == "status":
            program.add(isa.ReadStatus())
        elif kind == "fence":
            program.add(isa.Fence())
        elif kind == "nop":
            program.add(isa.Nop())
        elif kind == "clear":
            program.add(isa.ClearError())
        elif rng.random() < 0.5:
            program.add(isa.Matmul(act_addr=0, count=0, slot=0, acc_addr=0))   # ZERO_SIZE
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
