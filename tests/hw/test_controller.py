# amaranth: UnusedElaboratable=no
"""The controller against a command-level reference and its dispatch-condition table.

Verifies ``hw/controller.py`` with random command words: valid instructions of
every opcode, malformed ones of every :class:`~hw.isa.ErrorCode` class (undefined
opcodes, reserved bits, zero sizes, oversize dimensions, address ranges; invalid
requantization records are signalled on ``param_error`` by a model of the load
unit), and arbitrary 64-bit words.  The reference takes each word's error code
from ``sim.golden.check_command`` and its fields from ``hw.isa.decode``; it checks

* the error code and opcode latched (first error wins) and ``executed``, whenever
  a command is done with the load unit idle, and at the end;
* the exact order and payload of every dispatch to the load, matmul and store
  streams, so that commands skipped while an error is latched (all but NOP,
  FENCE, READ_STATUS and CLEAR_ERROR) are never dispatched;
* the bytes of every ``READ_STATUS`` record, decoded as a
  :class:`~hw.isa.StatusRecord`.

The condition inputs (``load_idle``, ``preloading``, ``compute_drained``,
``store_idle``, ``all_idle``; ``store_current``, the rows and parameter set of the
store in the store path; ``queued_rows`` and ``streaming_rows``, the activation
rows the matmul unit will still read) are driven at random, and a
checker traced at every clock edge holds the waiting command to the table in the
controller's docstring (``WAITS``): its unit stream offers it exactly in the
cycles its condition holds, so never while it is false, and it is done in the very
cycle the condition holds and the unit takes it (skipped commands at once,
malformed ones and CLEAR_ERROR once the load unit is idle, FENCE once everything
is); ``commands.ready`` shows that the next command is fetched as this one is
done, and ``busy`` that one waits.  The run must see every input of every
condition hold a command back on its own.  Commands see random idle cycles and
every unit stream random backpressure.
"""

import dataclasses
import random
from collections import Counter

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from directed_commands import directed_commands
from harness import (
    Monitor,
    Trace,
    as_bytes,
    producer,
    random_ready,
    simulate,
    stream_signals,
    wait_for,
)

from hw import isa
from hw.config import COMMAND_WIDTH, STATUS_RECORD_BYTES, NpuConfig
from hw.controller import Controller
from hw.isa import ErrorCode, Opcode
from hw.load_unit import LoadKind
from sim.golden import check_command
from sim.programs import invalid_instruction, valid_instruction

CONFIGS = [NpuConfig(rows=3, cols=2, act_depth=8, weight_tiles=2, acc_depth=6, data_bytes=4),
           NpuConfig(rows=8, cols=5, act_depth=300, weight_tiles=3, acc_depth=40)]

def _malformed(rng, config, opcode):
    """A command word of ``opcode`` broken one way or another (or a random word)."""
    ins = valid_instruction(config, opcode, rng.randint)
    cls = type(ins)
    ways = ["opcode", "random", "field"]
    ways += ["reserved"] * (cls.used_bits() < 64)
    ways += ["rule"] * 3 * bool(cls.RULES)
    way = rng.choice(ways)
    if way == "opcode":
        return rng.getrandbits(60) << 4 | rng.randint(max(isa.Opcode) + 1, 15)
    if way == "random":
        return rng.getrandbits(64)
    if way == "reserved":
        return ins.encode() | 1 << rng.randrange(cls.used_bits(), 64)
    if way == "rule":
        return invalid_instruction(config, opcode, rng.randint).encode()
    name = rng.choice([f.name for f in cls.FIELDS] or ["-"])
    if name == "-":
        return ins.encode() | 1 << rng.randrange(cls.used_bits(), 64)
    f = cls.field(name)
    return dataclasses.replace(ins, **{name: rng.randint(f.min, f.max)}).encode()


def _edges(values, field):
    """The values of ``field`` at either end of each run of ``values`` (sorted), and the
    values just outside each run."""
    runs = np.split(values, np.flatnonzero(np.diff(values) != 1) + 1) if len(values) else []
    edges = {int(v) for run in runs for v in (run[0], run[-1], run[0] - 1, run[-1] + 1)}
    return sorted(v for v in edges if field.min <= v <= field.max)


def _boundary_words(config):
    """Every instruction with its fields at the ends of their valid ranges (as the rules
    give them, the other fields at their largest or smallest valid values), and each
    one step past an end; the lowest and highest reserved bit; every undefined opcode."""
    words = list(range(max(Opcode) + 1, 16))
    for opcode, cls in isa.INSTRUCTIONS.items():
        for pick in (max, min):     # largest values first, then smallest
            ins = valid_instruction(config, opcode, lambda low, high, pick=pick: pick(low, high))
            words.append(ins.encode())
            words += [ins.encode() | 1 << bit for bit in {cls.used_bits(), 63}
                      if bit < 64]
            for f in cls.FIELDS:
                words += [dataclasses.replace(ins, **{f.name: v}).encode()
                          for v in _edges(ins.valid_values(f.name, config), f)]
    return words


def _words(rng, config, count):
    """Random words, with the boundary words (each after a CLEAR_ERROR) mixed in."""
    opcodes = list(Opcode) + [Opcode.CLEAR_ERROR, Opcode.READ_STATUS] * 2
    words = []
    for _ in range(count):
        op = rng.choice(opcodes)
        words.append(valid_instruction(config, op, rng.randint).encode()
                     if rng.random() < 0.8 else _malformed(rng, config, op))
    for word in _boundary_words(config):
        i = rng.randint(0, len(words))
        words[i:i] = [isa.ClearError().encode(), word]
    return words


def _dispatch(ins):
    """The stream and payload fields a valid instruction is dispatched with."""
    op = ins.OPCODE
    if op == Opcode.LOAD_PARAMS:
        return "load", {"kind": LoadKind.PARAMS, "count": ins.count}
    if op == Opcode.LOAD_ACT:
        return "load", {"kind": LoadKind.ACT, "addr": ins.addr, "count": ins.count,
                        "length": ins.length, "signed": ins.signed}
    if op == Opcode.LOAD_WEIGHT:
        return "load", {"kind": LoadKind.WEIGHT, "addr": ins.slot, "count": ins.k,
                        "length": ins.n, "signed": ins.signed}
    if op == Opcode.MATMUL:
        return "matmul", {f.name: getattr(ins, f.name) for f in ins.FIELDS}
    if op == Opcode.STORE:
        return "store", {f.name: getattr(ins, f.name) for f in ins.FIELDS}
    return None, None


def _reference(config, words, bad_params):
    """Status before each command, the dispatches in order, the final status and how
    often each case came up."""
    error, error_opcode, executed = ErrorCode.NONE, 0, 0
    before, dispatches = [], []
    seen = {"codes": set(), "skipped": 0, "error_while_latched": 0}
    flags = iter(bad_params)
    for word in words:
        before.append((error, error_opcode, executed))
        code, ins = check_command(word, config)
        opcode = word & 0xF
        seen["codes"].add(code)
        if code != ErrorCode.NONE:
            seen["error_while_latched"] += error != ErrorCode.NONE
            if error == ErrorCode.NONE:
                error, error_opcode = code, opcode
        elif error != ErrorCode.NONE and opcode not in isa.ALWAYS_EXECUTED:
            seen["skipped"] += 1
        else:
            assert ins == isa.decode(word)
            stream, fields = _dispatch(ins)
            if stream:
                dispatches.append((stream, fields))
            if opcode == Opcode.LOAD_PARAMS and next(flags):
                error, error_opcode = ErrorCode.BAD_PARAM, Opcode.LOAD_PARAMS
                seen["codes"].add(ErrorCode.BAD_PARAM)
            elif opcode == Opcode.READ_STATUS:
                dispatches.append(("status", isa.StatusRecord(
                    error=error, error_opcode=error_opcode, commands=executed)))
            elif opcode == Opcode.CLEAR_ERROR:
                error, error_opcode = ErrorCode.NONE, 0
        executed += 1
    return before, dispatches, (error, error_opcode, executed), seen


def _payload(name, payload, fields):
    """A dispatched payload, in the reference's terms."""
    if name == "status":
        assert payload.length == STATUS_RECORD_BYTES
        return isa.StatusRecord.decode(as_bytes(payload.bytes, STATUS_RECORD_BYTES))
    return {k: getattr(payload, k) for k in fields}


#: What a well-formed command waits for (the table in ``Controller``'s docstring): the
#: condition inputs that must be high, or low for those written ``~name``.  A MATMUL
#: also waits for the matmul unit to take it (``ready``), as every dispatch does.
WAITS = {Opcode.LOAD_ACT: ["load_idle", "act_rows_free"],
         Opcode.LOAD_WEIGHT: ["load_idle", "~preloading"],
         Opcode.LOAD_PARAMS: ["load_idle", "store_idle"],
         Opcode.MATMUL: ["load_idle", "store_idle"],
         Opcode.STORE: ["load_idle", "store_idle", "compute_drained"],
         Opcode.READ_STATUS: ["load_idle", "store_idle"],
         Opcode.FENCE: ["all_idle"],
         Opcode.CLEAR_ERROR: ["load_idle"],
         Opcode.NOP: []}
#: A malformed command latches its error once the load unit is idle.
MALFORMED_WAITS = ["load_idle"]
#: The stream each opcode is dispatched on.
STREAMS = {Opcode.LOAD_ACT: "load", Opcode.LOAD_WEIGHT: "load", Opcode.LOAD_PARAMS: "load",
           Opcode.MATMUL: "matmul", Opcode.STORE: "store", Opcode.READ_STATUS: "status"}


def _store_terms(opcode, word, row):
    """LOAD_PARAMS and MATMUL wait for the store path only when its store conflicts:
    the same parameter set, or accumulator rows the MATMUL writes."""
    fields = isa.decode(word)
    if opcode == Opcode.LOAD_PARAMS:
        conflict = fields.param_set == row["store.param_set"]
    else:
        conflict = (fields.acc_addr < row["store.acc_addr"] + row["store.count"]
                    and row["store.acc_addr"] < fields.acc_addr + fields.count)
    return conflict


def _act_rows_free(word, row):
    """No MATMUL in the matmul unit will still read rows this LOAD_ACT writes."""
    fields = isa.decode(word)
    return not any(row[f"{unit}.valid"] and fields.addr < row[f"{unit}.end"]
                   and row[f"{unit}.addr"] < fields.addr + fields.count
                   for unit in ("queued", "streaming"))


def _holds(row, term):
    return not row[term[1:]] if term.startswith("~") else bool(row[term])


class DispatchChecker:
    """Checks fetch and dispatch in every traced cycle against the wait table.

    The command waiting is the one after the ``executed`` commands done; in the cycle
    it is considered it is skipped if an error is latched (and it is not always
    executed), and otherwise waits for ``WAITS`` (``MALFORMED_WAITS`` when malformed).
    Its stream's ``valid`` must be high exactly when its condition holds (no other
    stream's ever), it must be done (``executed`` counts it at the edge) exactly when
    the condition holds and the unit is ready, ``commands.ready`` must be high exactly
    when no command waits or this one is done, and ``busy`` when one waits.  Where a
    command is done with the load unit idle (so every ``BAD_PARAM`` of an earlier
    command has arrived), the latched state must be the reference's before it.
    """

    def __init__(self, config, words, before):
        self.words, self.before = words, before
        self.codes = [check_command(word, config)[0] for word in words]
        self.taken, self.executed = 0, 0
        self.stats = Counter()

    def edge(self, row):
        assert row["executed"] == self.executed, f"executed: {row['executed']}"
        waiting = self.taken > self.executed
        assert row["busy"] == waiting, "busy"
        offers, done = dict.fromkeys(("load", "matmul", "store", "status"), False), False
        if waiting:
            i = self.executed
            opcode = self.words[i] & 0xF
            if self.codes[i] != ErrorCode.NONE:
                case, terms, stream = "malformed", MALFORMED_WAITS, None
            elif row["error"] != ErrorCode.NONE and opcode not in isa.ALWAYS_EXECUTED:
                case, terms, stream = "skipped", [], None
            else:
                opcode = Opcode(opcode)
                case, terms, stream = opcode.name, WAITS[opcode], STREAMS.get(opcode)
                if opcode == Opcode.LOAD_ACT:
                    row = {**row, "act_rows_free": _act_rows_free(self.words[i], row)}
                if opcode in (Opcode.LOAD_PARAMS, Opcode.MATMUL):
                    if _store_terms(opcode, self.words[i], row):
                        self.stats[(case, "store conflict")] += 1
                    else:
                        terms = [t for t in terms if t != "store_idle"]
                        self.stats[(case, "no store conflict", not row["store_idle"])] += 1
            blocking = [term for term in terms if not _holds(row, term)]
            if stream is not None:
                offers[stream] = not blocking
            done = not blocking and (stream is None or row[f"{stream}.ready"])
            if len(blocking) == 1:
                self.stats[(case, blocking[0])] += 1
            self.stats[(case, "done" if done else "unit busy" if not blocking else "waits")] += 1
            if done and row["load_idle"]:
                state = (row["error"], row["error_opcode"], row["executed"])
                assert state == self.before[i], f"state before command {i} ({self.words[i]:#x})"
                self.stats["states checked"] += 1
            self.stats["back to back"] += done and row["commands.valid"]
        for stream, offered in offers.items():
            assert row[f"{stream}.valid"] == offered, f"{stream}.valid"
        assert row["commands.ready"] == (not waiting or done), "commands.ready"
        self.taken += row["commands.valid"] and row["commands.ready"]
        self.executed += done


class Environment:
    """The condition inputs and ``param_error``, driven at random.

    Each input flips to busy or idle at random from cycle to cycle, except that while
    the controller offers a command that its unit has not taken, nothing that was
    idle becomes busy (as in the chip, where only a dispatch makes a unit busy: the
    controller's offer holds until taken).  ``all_idle`` is high only with every other
    input idle.  After every load dispatch the load unit stays busy for a few cycles,
    and a LOAD_PARAMS with an invalid record (``bad_params``, in dispatch order)
    pulses ``param_error`` once or twice meanwhile.
    """

    BUSY = ["load", "matmul", "preloading", "compute", "store"]

    def __init__(self, dut, bad_params, rng):
        self.dut, self.flags, self.rng = dut, iter(bad_params), rng
        self.busy = dict.fromkeys(self.BUSY, False)
        self.loading, self.pulses = 0, []

    async def process(self, ctx):
        dut, rng = self.dut, self.rng
        units = [dut.load, dut.matmul, dut.store, dut.status_record]
        async for _, _, kind, *v in ctx.tick().sample(
                dut.load.payload.kind, *[s for u in units for s in (u.valid, u.ready)]):
            offering = any(v[i] and not v[i + 1] for i in range(0, len(v), 2))
            if v[0] and v[1]:           # a load dispatched
                self.loading = rng.randint(2, 6)
                if kind == LoadKind.PARAMS and next(self.flags):
                    self.pulses = rng.sample(range(1, self.loading + 1), rng.randint(1, 2))
            else:
                self.loading = max(self.loading - 1, 0)
            ctx.set(dut.param_error, self.loading in self.pulses)
            if self.loading in self.pulses:
                self.pulses.remove(self.loading)
            for name in self.BUSY:
                if rng.random() < 0.35:
                    busy = rng.random() < 0.4
                    self.busy[name] = busy and (self.busy[name] or not offering)
            if not offering and rng.random() < 0.2:
                # MATMULs enter and leave the matmul unit only outside an offer.
                depth = dut.config.act_depth
                for unit in (dut.queued_rows, dut.streaming_rows):
                    addr = rng.randrange(depth)
                    # What the matmul unit reports: the rows' end, addr + count.
                    ctx.set(unit, {"valid": rng.random() < 0.6, "addr": addr,
                                   "end": addr + rng.randint(1, depth - addr)})
            if not offering and rng.random() < 0.2:
                # Only a STORE's dispatch changes the store in the path, never during an offer.
                depth = dut.config.acc_depth
                addr = rng.randrange(depth)
                count = rng.randint(1, depth - addr)
                ctx.set(dut.store_current, {"acc_addr": addr, "count": count,
                                            "param_set": rng.randrange(2)})
                ctx.set(dut.store_end, addr + count)   # as the store unit registers it
            quiet = not any(self.busy.values()) and not self.loading
            inputs = {"load_idle": not self.busy["load"] and not self.loading,
                      "preloading": self.busy["preloading"],
                      "compute_drained": not self.busy["compute"],
                      "store_idle": not self.busy["store"],
                      "all_idle": quiet and rng.random() < 0.7}
            for name, value in inputs.items():
                ctx.set(getattr(dut, name), value)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.rows}x{c.cols}")
def test_controller_checks_latches_and_dispatches(config):
    rng = random.Random(config.rows)
    dut = Controller(config=config)
    words = _words(rng, config, 600)
    bad_params = [rng.random() < 0.3 for _ in words]
    before, dispatches, final, seen = _reference(config, words, bad_params)
    # The random stream covers every error class, latched errors and skipped commands.
    assert seen["codes"] == set(ErrorCode)
    assert seen["skipped"] > 10 and seen["error_while_latched"] > 10

    environment = Environment(dut, bad_params, rng)
    checker = DispatchChecker(config, words, before)
    counts = {name: sum(d[0] == name for d in dispatches)
              for name in ("load", "matmul", "store", "status")}
    assert min(counts.values()) > 5
    sinks = [getattr(dut, "status_record" if name == "status" else name) for name in counts]
    signals = {name: getattr(dut, name) for name in (
        "load_idle", "preloading", "compute_drained", "store_idle", "all_idle",
        "busy", "error", "error_opcode", "executed")}
    for unit in ("queued", "streaming"):
        signals.update({f"{unit}.{field}": getattr(getattr(dut, f"{unit}_rows"), field)
                        for field in ("valid", "addr", "end")})
    signals.update({f"store.{field}": getattr(dut.store_current, field)
                    for field in ("acc_addr", "count", "param_set")})
    for name, sink in [("commands", dut.commands), *zip(counts, sinks, strict=True)]:
        signals.update(stream_signals(name, sink, payload=False))
    trace = Trace(signals, on_edge=checker.edge)

    taken = []

    def check(name, payload, extras):
        """Each dispatch is the next one the reference made."""
        i = len(taken)
        assert i < len(dispatches), f"a dispatch to {name} beyond the reference's"
        assert (name, _payload(name, payload, dispatches[i][1])) == dispatches[i], f"dispatch {i}"
        taken.append(name)

    async def final_check(ctx):
        await wait_for(ctx, lambda: checker.executed == len(words))
        await wait_for(ctx, lambda: environment.loading == 0)
        await ctx.tick()
        assert (ctx.get(dut.error), ctx.get(dut.error_opcode), ctx.get(dut.executed)) == final
        assert not ctx.get(dut.busy)

    monitor = Monitor(dict(zip(counts, sinks, strict=True)), on_transfer=check)
    simulate(dut, producer(dut.commands, words, seed=1), final_check,
             *[random_ready(sink, counts[name], [], seed=10 + i, probability=0.5)
               for i, (name, sink) in enumerate(zip(counts, sinks, strict=True))],
             background=[environment.process, trace.process, monitor.process])
    assert len(taken) == len(dispatches) and checker.taken == len(words)
    # Every input of every condition held a command back on its own; units kept
    # offered commands waiting; fetch overlapped dispatch; the state was checked often.
    stats = checker.stats
    blocked = [(op.name, term) for op, terms in WAITS.items() for term in terms]
    blocked += [("malformed", term) for term in MALFORMED_WAITS]
    assert [b for b in blocked if not stats[b]] == []
    assert all(stats[(op.name, "unit busy")] for op in STREAMS)
    # LOAD_PARAMS and MATMUL went ahead of a busy store path that did not conflict.
    for op in ("LOAD_PARAMS", "MATMUL"):
        assert stats[(op, "store conflict")] and stats[(op, "no store conflict", True)], op
    assert stats[("skipped", "done")] > 10 and stats["back to back"] > 50
    assert stats["states checked"] > len(words) // 2


def test_controller_config_wrong():
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        Controller(config=None)


# -- the decoder alone: hand-written cases, and built from the rules ------------------------

class Decoder(wiring.Component):
    """The controller's command check (``Controller._check``) alone, combinational."""

    def __init__(self, config):
        self.controller = Controller(config=config)
        super().__init__({"word": wiring.In(COMMAND_WIDTH), "code": wiring.Out(ErrorCode)})

    def elaborate(self, platform):
        m = Module()
        code = self.controller._check(m, self.word)
        m.d.comb += self.code.eq(code)
        return m


def _decode(config, words):
    """The ErrorCode the controller's decoder gives each word."""
    dut, codes = Decoder(config), []

    async def testbench(ctx):
        for word in words:
            ctx.set(dut.word, word)
            codes.append(ErrorCode(ctx.get(dut.code)))

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
    return codes


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.rows}x{c.cols}")
def test_decoder_directed_cases(config):
    words, expected = zip(*directed_commands(config), strict=True)
    assert _decode(config, words) == list(expected)
    assert [check_command(word, config)[0] for word in words] == list(expected)


def _rule_breaking_words(rng, config, count):
    """Random words, and for every rule of every instruction valid commands with one
    field changed so that this rule is broken (and perhaps others)."""
    words = [rng.getrandbits(64) for _ in range(count)]
    words += [rng.getrandbits(60) << 4 | op for op in isa.INSTRUCTIONS for _ in range(count)]
    for opcode, cls in isa.INSTRUCTIONS.items():
        for _ in range(count // 10):
            ins = valid_instruction(config, opcode, rng.randint)
            words.append(ins.encode())
            for rule in cls.RULES:
                for f in cls.FIELDS:
                    fields = ins.varied(f.name)
                    broken = np.broadcast_to(rule.condition(fields, config),
                                             getattr(fields, f.name).shape)
                    values = getattr(fields, f.name)[broken]
                    if len(values):
                        value = int(values[rng.randrange(len(values))])
                        words.append(dataclasses.replace(ins, **{f.name: value}).encode())
    return words


#: A rule no instruction has: a raw STORE of more rows than the array has columns.
EXTRA_RULE = isa.Rule(error=ErrorCode.OVERSIZE, doc="`raw` and `count` > `cols`",
                      condition=lambda f, c: (f.raw == 1) & (f.count > c.cols))


@pytest.mark.parametrize("extra", [False, True], ids=["rules", "extra rule"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.rows}x{c.cols}")
def test_decoder_is_built_from_the_rules(config, extra, monkeypatch):
    """The decoder and the golden model agree on words that break each rule; with one
    more rule, both raise its error exactly where it decides the code, and both change
    back without it."""
    rng = random.Random(config.cols + extra)
    original = isa.Store.RULES
    if extra:
        rules = sorted([*original, EXTRA_RULE], key=lambda rule: rule.error)
        monkeypatch.setattr(isa.Store, "RULES", tuple(rules))
    words = _rule_breaking_words(rng, config, 200)
    expected = [check_command(word, config)[0] for word in words]
    assert _decode(config, words) == expected
    assert set(expected) == set(ErrorCode) - {ErrorCode.BAD_PARAM}
    if extra:
        monkeypatch.setattr(isa.Store, "RULES", original)
        changed = [(word, code) for word, code in zip(words, expected, strict=True)
                   if check_command(word, config)[0] != code]
        assert len(changed) > 10
        for word, code in changed:
            assert code == ErrorCode.OVERSIZE and EXTRA_RULE.condition(isa.decode(word), config)
        without = [check_command(word, config)[0] for word, _ in changed]
        assert _decode(config, [word for word, _ in changed]) == without
