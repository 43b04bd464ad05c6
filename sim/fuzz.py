"""Seeded random command streams on the compiled Verilator chip against the golden model.

``python -m sim.fuzz --seed 1 --budget 60`` (``make fuzz SEED=1 BUDGET=60``) draws runs
for ``--budget`` seconds and runs each on one chip of the compiled harness
(:mod:`sim.compiled_harness`) and on :class:`sim.golden.GoldenNpu`, which keep their state
from run to run.  Every output byte, the status, the data-in bytes taken and the array
cycles must be equal; the cycles must equal the cycle model's when no stream stalls, and
may only exceed them under random stalls.  It prints what it ran (streams, commands,
resets, short and long data) and what it found (mismatches, hangs, cycle-model
differences), and exits 1 if it found anything.

What a run holds (:func:`draw_run`, on top of :mod:`sim.programs`):

* valid commands of every kind, their fields drawn from the rules of :mod:`hw.isa`
  (:func:`draw_valid`), with the data each takes;
* malformed commands breaking one rule (:func:`draw_invalid`), words with several faults
  at once (reserved bits, undefined opcodes, broken fields together);
* hazard bursts: a ``MATMUL`` followed at once by loads, stores and matmuls touching its
  activation rows, weight slot and accumulator rows, and parameters of the set a store in
  flight uses;
* requantization records with extreme fields (whole field ranges and their edges, clamp
  bounds crossed) and invalid ones (shift 0, reserved bits set) at random positions;
* short data (the stream ends inside a command: the chip waits, the model raises
  :class:`~sim.golden.DataUnderflow`; both must agree on the state, then both are reset),
  long data (beats nobody takes);
* random stalls on all three streams, and resets at random cycles (the bytes before the
  reset must be a prefix of the model's, the status after it the reset state; as the
  edge of a reset may complete a write in flight, every buffer is then rewritten on both
  sides, which is itself a checked run).

Every ``--resync`` runs both are reset and rewritten, so that the runs since the last
rewrite reproduce a mismatch on a fresh chip.  A mismatch is then shrunk (delta debugging
over the commands of those runs, :func:`shrink`) and printed with mnemonics.
"""

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from hw import isa
from hw.beats import pack_rows, row_stride
from hw.config import PARAM_RECORD_BYTES, NpuConfig
from hw.isa import ErrorCode, Opcode
from sim.golden import DataUnderflow, GoldenNpu, check_command, unpack_param_records
from sim.host_loop import RunTimeout
from sim.programs import _smallest_valid, random_params

__all__ = ["Run", "Item", "Pool", "Fuzzer", "Report", "draw_valid", "draw_invalid", "draw_run",
           "extreme_record", "replay", "shrink", "describe", "main"]

#: The configurations ``--config`` names (the compiled harness's tests build the first).
CONFIGS = {
    "4x4": NpuConfig(rows=4, cols=4, act_depth=64, weight_tiles=2, acc_depth=32, data_bytes=4),
    "2x3-1byte": NpuConfig(rows=2, cols=3, act_depth=48, weight_tiles=3, acc_depth=24,
                           data_bytes=1),
    "4x4-16byte": NpuConfig(rows=4, cols=4, act_depth=64, weight_tiles=2, acc_depth=32,
                            data_bytes=16),
}


# -- drawing commands from the rules ------------------------------------------------------

def _candidates(f, config, rng):
    """Values to try for field ``f``: the edges of every configuration size, small values
    and a few from the whole field."""
    if f.width == 1:
        return np.array([0, 1])
    sizes = [config.rows, config.cols, config.act_depth, config.acc_depth,
             config.weight_tiles]
    edges = [0, 1, 2, f.max, *(s + d for s in sizes for d in (-1, 0, 1))]
    top = 2 * max(sizes) + 2
    values = np.concatenate([edges, rng.integers(0, top, 24),
                             rng.integers(f.min, f.max + 1, 4, dtype=np.int64)])
    return np.unique(np.clip(values, f.min, f.max))


def _broken(ins, name, values, config):
    """Which of ``values`` for field ``name`` break a rule, the other fields as in ``ins``."""
    fields = {g.name: getattr(ins, g.name) for g in ins.FIELDS}
    fields[name] = values
    namespace = type("Fields", (), fields)
    broken = np.zeros(values.shape, dtype=bool)
    for _, violated in ins.checks(namespace, config):
        broken |= np.broadcast_to(violated, values.shape)
    return broken


def draw_valid(config, opcode, rng, *, sweeps=2):
    """A random instruction of ``opcode`` that passes its rules on ``config``.

    As :func:`sim.programs.valid_instruction`, from the rules alone: from the first
    instruction with fields of 0 and 1 that passes, each field in turn takes a random
    value among those of :func:`_candidates` that break no rule with the others as they
    are (the configuration's edges included), ``sweeps`` times over.
    """
    cls = isa.INSTRUCTIONS[opcode]
    ins = _smallest_valid(cls, cls.RULES, config)
    for _ in range(sweeps):
        for f in cls.FIELDS:
            values = _candidates(f, config, rng)
            valid = values[~_broken(ins, f.name, values, config)]
            if len(valid):
                ins = dataclasses.replace(ins, **{f.name: int(rng.choice(valid))})
    return ins


def draw_invalid(config, opcode, rng):
    """An instruction of ``opcode`` that breaks a rule on ``config`` (None if it has no
    rules): a :func:`draw_valid` one with one field set to a value that breaks one."""
    cls = isa.INSTRUCTIONS[opcode]
    ins = draw_valid(config, opcode, rng)
    for name in rng.permutation([f.name for f in cls.FIELDS]):
        values = _candidates(cls.field(name), config, rng)
        broken = values[_broken(ins, name, values, config)]
        if len(broken):
            return dataclasses.replace(ins, **{name: int(rng.choice(broken))})
    return None


def extreme_record(rng):
    """A requantization record (valid) whose fields sit at or near their limits, or
    anywhere in their range: bias and multiplier of 32 bits, shifts 1 and 63, zero points
    and clamp bounds over the whole 9 bits (crossed bounds too), every rounding."""
    def pick(edges, low, high):
        return int(rng.choice(edges)) if rng.random() < 0.6 else int(rng.integers(low, high + 1))
    return isa.ParamRecord(
        bias=pick([-(1 << 31), (1 << 31) - 1, -1, 0, 1], -(1 << 31), (1 << 31) - 1),
        multiplier=pick([0, 1, (1 << 30), (1 << 31) - 1], 0, (1 << 31) - 1),
        shift=pick([1, 2, 31, 32, 62, 63], 1, 63),
        rounding=int(rng.integers(0, 4)),
        weight_zero=pick([-256, -128, 0, 127, 255], -256, 255),
        output_zero=pick([-256, -128, 0, 127, 255], -256, 255),
        low=pick([-256, -128, 0, 127, 255], -256, 255),
        high=pick([-256, -128, 0, 127, 255], -256, 255))


def _record_bytes(record):
    return record.encode() if isinstance(record, isa.ParamRecord) else bytes(record)


def _bad_record(rng):
    """The bytes of a record that breaks a rule of :data:`hw.isa.PARAM_RULES`: shift 0,
    reserved bits set, or both."""
    word = int.from_bytes(extreme_record(rng).encode(), "little")
    offsets, offset = {}, 0
    for f in isa.PARAM_FIELDS:
        offsets[f.name] = (offset, f.width)
        offset += f.width
    kind = int(rng.integers(0, 3))
    if kind in (0, 2):
        start, width = offsets["shift"]
        word &= ~(((1 << width) - 1) << start)
    if kind in (1, 2):
        name = "reserved0" if rng.random() < 0.3 else "reserved1"
        start, width = offsets[name]
        word |= int(rng.integers(1, 1 << width)) << start
    return word.to_bytes(PARAM_RECORD_BYTES, "little")


class Pool:
    """Instructions drawn once and used again: drawing from the rules costs milliseconds,
    a run needs dozens.  A draw is fresh with chance ``fresh`` (always while the pool of
    its kind holds fewer than ``least``), else one drawn before."""

    def __init__(self, config, *, fresh=0.1, least=24, most=2048):
        self.config, self.fresh, self.least, self.most = config, fresh, least, most
        self._pools = {}

    def _draw(self, key, rng, make):
        pool = self._pools.setdefault(key, [])
        if len(pool) < self.least or rng.random() < self.fresh:
            ins = make()
            if len(pool) < self.most:
                pool.append(ins)
            else:
                pool[int(rng.integers(0, len(pool)))] = ins
            return ins
        return pool[int(rng.integers(0, len(pool)))]

    def valid(self, opcode, rng):
        return self._draw(("valid", opcode), rng,
                          lambda: draw_valid(self.config, opcode, rng))

    def invalid(self, opcode, rng):
        return self._draw(("invalid", opcode), rng,
                          lambda: draw_invalid(self.config, opcode, rng))


# -- runs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One command word and the data-in bytes it brings (whole beats)."""
    word: int
    data: bytes = b""


@dataclass
class Run:
    """One run of the fuzz: what the host sends and how.

    ``cut`` beats are dropped from the end of the data (short data), ``extra`` bytes
    appended (long data); ``reset_before`` resets chip and model before the run,
    ``reset_after`` resets the chip after that many cycles of it."""
    items: list = field(default_factory=list)
    stall_probability: float = 0.0
    seed: int = 0
    cut: int = 0
    extra: bytes = b""
    reset_before: bool = False
    reset_after: int | None = None
    label: str = "random"

    @property
    def commands(self):
        return [item.word for item in self.items]

    def data_in(self, config):
        data = b"".join(item.data for item in self.items)
        if self.cut:
            data = data[:max(0, len(data) - self.cut * config.data_bytes)]
        return data + self.extra


def _rows(config, rng, count, length):
    return pack_rows(config, rng.integers(0, 256, (count, length)))


def _records(config, records):
    return b"".join(pack_rows(config, np.frombuffer(_record_bytes(r), np.uint8)[None])
                    for r in records)


def _with_data(config, ins, rng):
    """``ins`` as an :class:`Item` with the data it reads."""
    op = ins.OPCODE
    if op == Opcode.LOAD_ACT:
        return Item(ins.encode(), _rows(config, rng, ins.count, ins.length))
    if op == Opcode.LOAD_WEIGHT:
        return Item(ins.encode(), _rows(config, rng, ins.k, ins.n))
    if op == Opcode.LOAD_PARAMS:
        choice = rng.random()
        if choice < 0.5:
            records = random_params(rng, ins.count, output_signed=bool(rng.integers(0, 2)))
        else:
            records = [extreme_record(rng) for _ in range(ins.count)]
        if rng.random() < 0.1:  # an invalid record somewhere
            records[int(rng.integers(0, ins.count))] = _bad_record(rng)
        return Item(ins.encode(), _records(config, records))
    return Item(ins.encode())


def _multi_fault(config, rng, pool):
    """A word with faults of several kinds at once."""
    kind = int(rng.integers(0, 3))
    if kind == 0:   # every bit random: undefined opcodes, reserved bits, broken fields
        return int(rng.integers(0, 1 << 63, dtype=np.uint64)) << 1 | int(rng.integers(0, 2))
    ins = pool.invalid(_CHECKED[int(rng.integers(0, len(_CHECKED)))], rng)
    word = ins.encode()
    spare = isa.COMMAND_WIDTH - ins.used_bits()
    if kind == 1 and spare:   # a broken field and reserved bits
        word |= int(rng.integers(1, 1 << min(spare, 62))) << ins.used_bits()
    else:                     # a broken field under an undefined opcode
        word = (word & ~0xF) | int(rng.choice(sorted(set(range(16)) - set(isa.INSTRUCTIONS))))
    return word


def _hazards(config, rng, pool):
    """A MATMUL and, straight after it, commands that touch what it reads and writes."""
    mm = pool.valid(Opcode.MATMUL, rng)
    items = [Item(mm.encode())]
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(0, 5))
        if kind == 0:
            addr = int(rng.integers(mm.act_addr, mm.act_addr + mm.count))
            ins = isa.LoadAct(addr=addr, count=int(rng.integers(1, config.act_depth - addr + 1)),
                              length=int(rng.integers(1, config.rows + 1)),
                              signed=int(rng.integers(0, 2)))
        elif kind == 1:
            ins = isa.LoadWeight(slot=mm.slot, k=int(rng.integers(1, config.rows + 1)),
                                 n=int(rng.integers(1, config.cols + 1)),
                                 signed=int(rng.integers(0, 2)),
                                 param_set=int(rng.integers(0, 2)))
        elif kind == 2:
            addr = int(rng.integers(mm.acc_addr, mm.acc_addr + mm.count))
            ins = isa.Store(acc_addr=addr, count=int(rng.integers(1, config.acc_depth - addr + 1)),
                            n=int(rng.integers(1, config.cols + 1)), raw=int(rng.integers(0, 2)),
                            param_set=int(rng.integers(0, 2)))
        elif kind == 3:
            ins = dataclasses.replace(mm, accumulate=1, slot=int(rng.integers(
                0, config.weight_tiles)))
        else:
            ins = isa.LoadParams(count=int(rng.integers(1, config.cols + 1)),
                                 param_set=int(rng.integers(0, 2)))
        if ins.error(config) == ErrorCode.NONE:
            items.append(_with_data(config, ins, rng))
    return items


#: The instructions with rules, which a malformed command breaks.
_CHECKED = [op for op, cls in isa.INSTRUCTIONS.items() if cls.RULES]
#: What a run's commands are drawn from, and how often.  An error makes the chip skip
#: every later command until CLEAR_ERROR, so errors are rare and mostly cleared.
_KINDS = {"act": 3, "weight": 3, "params": 2, "matmul": 5, "store": 4, "hazards": 2,
          "status": 1, "fence": 1, "nop": 1, "clear": 0.5, "malformed": 1,
          "multi-fault": 0.5, "bad record": 0.5}
_KIND_NAMES = list(_KINDS)
_KIND_WEIGHTS = np.array(list(_KINDS.values())) / sum(_KINDS.values())
_OPCODES = {"act": Opcode.LOAD_ACT, "weight": Opcode.LOAD_WEIGHT, "params": Opcode.LOAD_PARAMS,
            "matmul": Opcode.MATMUL, "store": Opcode.STORE}
_PLAIN = {"status": isa.ReadStatus(), "fence": isa.Fence(), "nop": isa.Nop(),
          "clear": isa.ClearError()}


def draw_run(config, rng, *, length=None, pool=None):
    """A random run (see the module docstring); its options are drawn too.  ``pool`` (a
    :class:`Pool`) draws the instructions; a run draws from its own if None."""
    pool = Pool(config) if pool is None else pool
    run = Run(seed=int(rng.integers(0, 1 << 31)))
    length = int(rng.integers(1, 60)) if length is None else length
    while len(run.items) < length:
        kind = _KIND_NAMES[int(rng.choice(len(_KIND_NAMES), p=_KIND_WEIGHTS))]
        if kind in _OPCODES:
            run.items.append(_with_data(config, pool.valid(_OPCODES[kind], rng), rng))
        elif kind == "hazards":
            run.items += _hazards(config, rng, pool)
        elif kind in _PLAIN:
            run.items.append(Item(_PLAIN[kind].encode()))
        else:
            if kind == "malformed":
                word = pool.invalid(_CHECKED[int(rng.integers(0, len(_CHECKED)))], rng).encode()
                run.items.append(Item(word))
            elif kind == "multi-fault":
                run.items.append(Item(_multi_fault(config, rng, pool)))
            else:
                count = int(rng.integers(1, config.cols + 1))
                records = [extreme_record(rng) for _ in range(count)]
                records[int(rng.integers(0, count))] = _bad_record(rng)
                run.items.append(Item(isa.LoadParams(count=count, param_set=int(
                    rng.integers(0, 2))).encode(), _records(config, records)))
            # Mostly the error is read and cleared at once, so that the run goes on.
            if rng.random() < 0.5:
                run.items.append(Item(isa.ReadStatus().encode()))
            if rng.random() < 0.7:
                run.items.append(Item(isa.ClearError().encode()))
    if rng.random() < 0.3:
        run.items.append(Item(isa.ReadStatus().encode()))
    if rng.random() < 0.7:
        run.stall_probability = float(rng.choice([0.05, 0.2, 0.4, 0.6]))
    beats = len(b"".join(item.data for item in run.items)) // config.data_bytes
    choice = rng.random()
    if choice < 0.08 and beats:
        run.cut, run.label = int(rng.integers(1, min(beats, 8) + 1)), "short"
    elif choice < 0.14:
        run.extra = _rows(config, rng, int(rng.integers(1, 4)), config.data_bytes)
        run.label = "long"
    return run


def scrub_run(config, rng):
    """A run that rewrites every buffer (activations, every weight slot, every accumulator
    row), after a reset that may have left a write half done."""
    c = config
    items = [_with_data(c, isa.LoadAct(addr=0, count=c.act_depth, length=c.rows,
                                       signed=int(rng.integers(0, 2))), rng)]
    for slot in range(c.weight_tiles):
        items.append(_with_data(c, isa.LoadWeight(slot=slot, k=c.rows, n=c.cols,
                                                  signed=int(rng.integers(0, 2))), rng))
    for acc in range(0, c.acc_depth, c.act_depth):
        count = min(c.act_depth, c.acc_depth - acc)
        items.append(Item(isa.Matmul(act_addr=0, count=count, slot=0, acc_addr=acc).encode()))
    items.append(Item(isa.ReadStatus().encode()))
    return Run(items=items, reset_before=True, seed=int(rng.integers(0, 1 << 31)),
               label="rewrite")


# -- checking one run ---------------------------------------------------------------------

@dataclass
class Outcome:
    """What one run showed."""
    problems: list = field(default_factory=list)   # mismatches, as text
    hang: bool = False
    cycle_difference: bool = False
    kind: str = "ok"       # ok, short, reset, hang
    cycles: int = 0


def _compare(got, want, outcome, *, prefix=False):
    if prefix:
        if want.data_out[:len(got.data_out)] != got.data_out:
            outcome.problems.append("data-out before the reset is not a prefix of the model's")
        return
    if got.data_out != want.data_out:
        first = next((i for i, (a, b) in enumerate(zip(got.data_out, want.data_out,
                                                        strict=False)) if a != b),
                     min(len(got.data_out), len(want.data_out)))
        outcome.problems.append(f"data-out differs from byte {first} "
                                f"({len(got.data_out)} bytes, model {len(want.data_out)})")
    if got.status != want.status:
        outcome.problems.append(f"status {got.status}, model {want.status}")
    if got.data_in_used != want.data_in_used:
        outcome.problems.append(f"data-in used {got.data_in_used}, model {want.data_in_used}")


def check_run(chip, model, run, *, max_idle_cycles):
    """Run ``run`` on the chip session and the model; returns an :class:`Outcome`.
    Afterwards both are in the same state again (reset where the run demands it)."""
    config = model.config
    outcome = Outcome()
    if run.reset_before:
        chip.reset()
        model.reset()
    data = run.data_in(config)
    try:
        want, starved = model.run(run.commands, data), False
    except DataUnderflow as exc:
        want, starved = exc.result, True
    try:
        got = chip.run(run.commands, data, stall_probability=run.stall_probability,
                       seed=run.seed, max_idle_cycles=max_idle_cycles,
                       reset_after=run.reset_after)
    except RunTimeout as exc:
        got = exc.result
        outcome.cycles = max_idle_cycles
        if starved:
            outcome.kind = "short"
            _compare(got, want, outcome)
        else:
            outcome.kind, outcome.hang = "hang", True
        chip.reset()
        model.reset()
        return outcome
    if got.reset:
        outcome.kind = "reset"
        _compare(got, want, outcome, prefix=True)
        if got.status != isa.StatusRecord():
            outcome.problems.append(f"status after the reset {got.status}")
        model.reset()
        return outcome
    outcome.cycles = got.cycles
    if starved:
        outcome.problems.append("the chip finished a run whose data the model found short")
        model.reset()
        chip.reset()
        return outcome
    _compare(got, want, outcome)
    if got.array_cycles != want.array_cycles:
        outcome.problems.append(f"array cycles {got.array_cycles}, model {want.array_cycles}")
    if run.stall_probability == 0 and got.cycles != want.cycles:
        outcome.cycle_difference = True
    elif got.cycles < want.cycles:
        outcome.cycle_difference = True
    if outcome.cycle_difference:
        outcome.problems.append(f"cycles {got.cycles}, cycle model {want.cycles}")
    return outcome


def replay(simulation, runs, *, max_idle_cycles):
    """Run ``runs`` on a fresh chip and model; the first failing run's index and
    :class:`Outcome`, or None when every run passes."""
    model = GoldenNpu(simulation.config)
    with simulation.session() as chip:
        for index, run in enumerate(runs):
            outcome = check_run(chip, model, run, max_idle_cycles=max_idle_cycles)
            if outcome.problems or outcome.hang:
                return index, outcome
            if outcome.kind == "reset":
                return None  # what follows a reset mid-run depends on a rewrite
    return None


def _keep(runs, kept):
    return [dataclasses.replace(run, items=[item for j, item in enumerate(run.items)
                                            if (i, j) in kept])
            for i, run in enumerate(runs)]


def shrink(simulation, runs, *, max_idle_cycles, seconds=120.0):
    """Delta debugging (ddmin) over the commands of ``runs``: a shorter list of runs that
    still fails on a fresh chip (within ``seconds``)."""
    deadline = time.monotonic() + seconds
    items = [(i, j) for i, run in enumerate(runs) for j in range(len(run.items))]

    def fails(subset):
        return replay(simulation, _keep(runs, set(subset)),
                      max_idle_cycles=max_idle_cycles) is not None

    if not fails(items):
        return runs
    parts = 2
    while len(items) >= 2 and time.monotonic() < deadline:
        size = -(-len(items) // parts)
        chunks = [items[k:k + size] for k in range(0, len(items), size)]
        reduced = False
        for index in range(len(chunks)):
            complement = [x for k, chunk in enumerate(chunks) if k != index for x in chunk]
            if fails(chunks[index]):
                items, parts, reduced = chunks[index], 2, True
                break
            if fails(complement):
                items, parts, reduced = complement, max(parts - 1, 2), True
                break
        if not reduced:
            if parts >= len(items):
                break
            parts = min(len(items), 2 * parts)
    shrunk = _keep(runs, set(items))
    # Runs left without commands change nothing unless they reset the chip first.
    pruned = [run for run in shrunk if run.items or run.reset_before]
    if replay(simulation, pruned, max_idle_cycles=max_idle_cycles) is not None:
        return pruned
    return shrunk


def _mnemonic(word, config):
    code, ins = check_command(word, config)
    if ins is None:
        return f"{word:#018x}  ({code.name})"
    text = str(ins)
    return text if code == ErrorCode.NONE else f"{text}  ({code.name})"


def describe(runs, config):
    """The runs as text, one command per line with its mnemonic."""
    lines = []
    for index, run in enumerate(runs):
        options = [f"stall {run.stall_probability}", f"seed {run.seed}"]
        if run.reset_before:
            options.append("reset before")
        if run.reset_after:
            options.append(f"reset after {run.reset_after} cycles")
        if run.cut:
            options.append(f"data cut by {run.cut} beats")
        if run.extra:
            options.append(f"{len(run.extra)} extra data bytes")
        lines.append(f"run {index} ({run.label}; {', '.join(options)}):")
        for item in run.items:
            data = f"  + {len(item.data)} data bytes" if item.data else ""
            lines.append(f"    {_mnemonic(item.word, config)}{data}")
            if item.word & 0xF == Opcode.LOAD_PARAMS and item.data:
                lines += [f"        record {k}: {text}"
                          for k, text in enumerate(_record_texts(item.data, config))]
    return "\n".join(lines)


def _record_texts(data, config):
    """The requantization records in a LOAD_PARAMS item's data, field by field."""
    stride = row_stride(config, PARAM_RECORD_BYTES)
    block = np.frombuffer(data[:len(data) // stride * stride], np.uint8).reshape(-1, stride)
    fields = unpack_param_records(np.ascontiguousarray(block[:, :PARAM_RECORD_BYTES]))
    return [" ".join(f"{name}={int(values[k])}" for name, values in fields.items())
            for k in range(len(block))]


# -- the loop -----------------------------------------------------------------------------

@dataclass
class Report:
    """What a fuzz campaign ran and found."""
    streams: int = 0
    commands: int = 0
    cycles: int = 0
    mismatches: int = 0
    hangs: int = 0
    cycle_differences: int = 0
    resets: int = 0           #: resets at a random cycle of a run
    reset_runs: int = 0       #: runs after a reset between runs
    short: int = 0
    long: int = 0
    seconds: float = 0.0
    failures: list = field(default_factory=list)   # (problems, shrunk runs as text)

    @property
    def commands_per_second(self):
        return self.commands / self.seconds if self.seconds else 0.0

    def summary(self):
        return (f"{self.streams} streams, {self.commands} commands, {self.cycles} cycles in "
                f"{self.seconds:.1f} s ({self.commands_per_second:.0f} commands/s); "
                f"resets at random cycles {self.resets}, runs after a reset "
                f"{self.reset_runs}, short data {self.short}, long data {self.long}; "
                f"mismatches {self.mismatches}, hangs {self.hangs}, "
                f"cycle-model differences {self.cycle_differences}")


class Fuzzer:
    """A fuzz campaign on one configuration.

    Parameters
    ----------
    simulation : CompiledSimulation
        The compiled chip (built on first use).
    seed : int
    resync : int
        Runs between resets that rewrite every buffer (the history a shrink replays).
    reset_probability : float
        Chance that a run is reset at a random cycle.
    max_idle_cycles : int
        The watchdog of every run.
    shrink_seconds : float
        Time a shrink may take per mismatch.
    """

    def __init__(self, simulation, *, seed=0, resync=20, reset_probability=0.05,
                 max_idle_cycles=3000, shrink_seconds=120.0):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, not {seed!r}")
        if isinstance(resync, bool) or not isinstance(resync, int) or resync <= 0:
            raise ValueError(f"resync must be a positive integer, not {resync!r}")
        if not 0 <= reset_probability <= 1:
            raise ValueError(f"reset_probability must be in 0..1, not {reset_probability!r}")
        self.simulation = simulation.build()
        self.config = simulation.config
        self.seed = seed
        self.resync = resync
        self.reset_probability = reset_probability
        self.max_idle_cycles = max_idle_cycles
        self.shrink_seconds = shrink_seconds

    def run(self, budget, *, log=None):
        """Fuzz for ``budget`` seconds; returns a :class:`Report`.  ``log(text)`` is
        called with each mismatch."""
        rng = np.random.default_rng(self.seed)
        pool = Pool(self.config)
        report = Report()
        model = GoldenNpu(self.config)
        history = []
        started = time.monotonic()
        with self.simulation.session() as chip:
            while time.monotonic() - started < budget:
                if len(history) >= self.resync:
                    run = scrub_run(self.config, rng)
                    history = []
                    report.reset_runs += 1
                else:
                    run = draw_run(self.config, rng, pool=pool)
                if rng.random() < self.reset_probability:
                    # Most runs take a few to a few dozen cycles per command.
                    run.reset_after = int(rng.integers(1, 40 * len(run.items) + 2))
                    run.label = "reset"
                history.append(run)
                outcome = check_run(chip, model, run, max_idle_cycles=self.max_idle_cycles)
                report.streams += 1
                report.commands += len(run.items)
                report.cycles += outcome.cycles
                report.short += outcome.kind == "short"
                report.long += bool(run.extra)
                report.resets += outcome.kind == "reset"
                report.hangs += outcome.hang
                report.cycle_differences += outcome.cycle_difference
                if outcome.problems or outcome.hang:
                    report.mismatches += len(outcome.problems) > outcome.cycle_difference
                    shrunk = shrink(self.simulation, history,
                                    max_idle_cycles=self.max_idle_cycles,
                                    seconds=self.shrink_seconds)
                    text = describe(shrunk, self.config)
                    report.failures.append((outcome.problems or ["hang"], text))
                    if log is not None:
                        log(f"FAILED: {'; '.join(outcome.problems or ['hang'])}\n{text}")
                if outcome.kind in ("reset", "hang") or outcome.problems:
                    # A reset mid-run may have half written a buffer: rewrite them all.
                    scrub = scrub_run(self.config, rng)
                    history = [scrub]
                    check = check_run(chip, model, scrub, max_idle_cycles=self.max_idle_cycles)
                    report.streams += 1
                    report.reset_runs += 1
                    report.commands += len(scrub.items)
                    report.cycles += check.cycles
                    if check.problems:
                        report.mismatches += 1
                        report.failures.append((check.problems, describe([scrub], self.config)))
        report.seconds = time.monotonic() - started
        return report


def main(argv=None):
    """``python -m sim.fuzz`` — fuzz the compiled chip against the golden model."""
    from sim.compiled_harness import CompiledSimulation, compiled_problem
    parser = argparse.ArgumentParser(prog="python -m sim.fuzz",
                                     description=main.__doc__.split("—")[1].strip())
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds to fuzz, builds excluded (default 60)")
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="4x4",
                        help="configuration to fuzz, or all of them in turn (default 4x4)")
    parser.add_argument("--resync", type=int, default=20,
                        help="runs between resets that rewrite every buffer (default 20)")
    args = parser.parse_args(argv)
    problem = compiled_problem()
    if problem:
        print(f"sim.fuzz needs the compiled Verilator harness: {problem}", file=sys.stderr)
        return 2
    names = list(CONFIGS) if args.config == "all" else [args.config]
    total, failed = Report(), False
    for index, name in enumerate(names):
        simulation = CompiledSimulation(config=CONFIGS[name]).build()
        fuzzer = Fuzzer(simulation, seed=args.seed + index, resync=args.resync)
        report = fuzzer.run(args.budget / len(names), log=lambda text: print(text, flush=True))
        print(f"{name}: {report.summary()}", flush=True)
        failed |= bool(report.mismatches or report.hangs or report.cycle_differences)
        for attribute in ("streams", "commands", "cycles", "mismatches", "hangs",
                          "cycle_differences", "resets", "reset_runs", "short", "long",
                          "seconds"):
            setattr(total, attribute, getattr(total, attribute) + getattr(report, attribute))
    if len(names) > 1:
        print(f"total: {total.summary()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
