# amaranth: UnusedElaboratable=no
"""The controller against a command-level reference built on the golden model's checks.

Verifies ``hw/controller.py`` with random command words: valid instructions of
every opcode, malformed ones of every :class:`~hw.isa.ErrorCode` class (undefined
opcodes, reserved bits, zero sizes, oversize dimensions, address ranges; invalid
requantization records are signalled on ``param_error`` by a model of the load
unit), and arbitrary 64-bit words.  The reference takes each word's error code
from ``sim.golden.check_command`` and its fields from ``hw.isa.decode``; it checks

* the error code and opcode latched (first error wins) and ``executed``, at every
  command taken and at the end;
* the exact order and payload of every dispatch to the load, matmul and store
  streams, so that commands skipped while an error is latched (all but NOP,
  FENCE, READ_STATUS and CLEAR_ERROR) are never dispatched;
* the bytes of every ``READ_STATUS`` record, decoded as a
  :class:`~hw.isa.StatusRecord`.

Commands see random idle cycles, every unit stream random backpressure, and
``datapath_idle`` stays low for a random while after each dispatch (and flickers).
"""

import dataclasses
import random

import pytest
from harness import Monitor, as_bytes, consumer, producer, simulate, valid_instruction, wait_for

from hw import isa
from hw.config import STATUS_RECORD_BYTES, NpuConfig
from hw.controller import Controller
from hw.isa import ErrorCode, Opcode
from hw.load_unit import LoadKind
from sim.golden import check_command

CONFIGS = [NpuConfig(rows=3, cols=2, act_depth=8, weight_tiles=2, acc_depth=6, data_bytes=4),
           NpuConfig(rows=8, cols=5, act_depth=300, weight_tiles=3, acc_depth=40)]

#: Fields that must not be zero, may exceed the array, or address a buffer.
SIZES = {Opcode.LOAD_PARAMS: ["count"], Opcode.LOAD_ACT: ["count", "length"],
         Opcode.LOAD_WEIGHT: ["k", "n"], Opcode.MATMUL: ["count"], Opcode.STORE: ["count", "n"]}
RANGES = {Opcode.LOAD_ACT: ["addr"], Opcode.LOAD_WEIGHT: ["slot"],
          Opcode.MATMUL: ["act_addr", "acc_addr", "slot"], Opcode.STORE: ["acc_addr"]}


def _limits(config):
    return {Opcode.LOAD_PARAMS: {"count": config.cols}, Opcode.LOAD_ACT: {"length": config.rows},
            Opcode.LOAD_WEIGHT: {"k": config.rows, "n": config.cols},
            Opcode.STORE: {"n": config.cols}}


def _last_in_range(config, ins, name):
    """The largest value of address or slot field ``name`` that keeps ``ins`` in range."""
    if name == "slot":
        return config.weight_tiles - 1
    depth = config.acc_depth if name == "acc_addr" else config.act_depth
    return depth - ins.count


def _field(cls, name):
    return next(f for f in cls.FIELDS if f.name == name)


def _malformed(rng, config, opcode):
    """A command word of ``opcode`` broken one way or another (or a random word)."""
    ins = valid_instruction(config, opcode, rng.randint)
    cls = type(ins)
    ways = ["opcode", "random", "field"]
    ways += ["reserved"] * (cls.used_bits() < 64)
    ways += ["zero"] * (opcode in SIZES)
    ways += ["oversize"] * (opcode in _limits(config))
    ways += ["range"] * (opcode in RANGES)
    way = rng.choice(ways)
    if way == "opcode":
        return rng.getrandbits(60) << 4 | rng.randint(max(isa.Opcode) + 1, 15)
    if way == "random":
        return rng.getrandbits(64)
    if way == "reserved":
        return ins.encode() | 1 << rng.randrange(cls.used_bits(), 64)
    if way == "zero":
        return dataclasses.replace(ins, **{rng.choice(SIZES[opcode]): 0}).encode()
    if way in ("oversize", "range"):
        # The first value past the limit, or any beyond it.
        if way == "oversize":
            name, limit = rng.choice(list(_limits(config)[opcode].items()))
        else:
            name = rng.choice(RANGES[opcode])
            limit = _last_in_range(config, ins, name)
        edge = limit + 1
        return dataclasses.replace(ins, **{name: rng.choice(
            [edge, rng.randint(edge, _field(cls, name).max)])}).encode()
    name = rng.choice([f.name for f in cls.FIELDS] or ["-"])
    if name == "-":
        return ins.encode() | 1 << rng.randrange(cls.used_bits(), 64)
    f = _field(cls, name)
    return dataclasses.replace(ins, **{name: rng.randint(f.min, f.max)}).encode()


def _boundary_words(config):
    """Every instruction with its sizes and addresses at their limits (valid), and each
    one step past a limit: zero sizes, oversize dimensions, addresses and slots just out
    of range, the lowest and highest reserved bit; and every undefined opcode."""
    words = list(range(max(Opcode) + 1, 16))
    for opcode, cls in isa.INSTRUCTIONS.items():
        for pick in (max, min):     # largest sizes first, then smallest
            ins = valid_instruction(config, opcode, lambda low, high, pick=pick: pick(low, high))
            words.append(ins.encode())
            words += [ins.encode() | 1 << bit for bit in {cls.used_bits(), 63}
                      if bit < 64]
            broken = [(name, 0) for name in SIZES.get(opcode, [])]
            broken += [(name, limit + 1) for name, limit in _limits(config).get(opcode, {}).items()]
            broken += [(name, _last_in_range(config, ins, name) + 1)
                       for name in RANGES.get(opcode, [])]
            words += [dataclasses.replace(ins, **{name: value}).encode() for name, value in broken]
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


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.rows}x{c.cols}")
def test_controller_checks_latches_and_dispatches(config):
    rng = random.Random(config.rows)
    dut = Controller(config=config)
    words = _words(rng, config, 400)
    bad_params = [rng.random() < 0.3 for _ in words]
    before, dispatches, final, seen = _reference(config, words, bad_params)
    # The random stream covers every error class, latched errors and skipped commands.
    assert seen["codes"] == set(ErrorCode)
    assert seen["skipped"] > 10 and seen["error_while_latched"] > 10

    datapath = {"busy": 0, "pulses": []}
    flags = iter(bad_params)

    async def datapath_model(ctx):
        """Busy for a while after each dispatch; a bad LOAD_PARAMS pulses param_error once
        or twice meanwhile."""
        async for _, _, *v in ctx.tick().sample(
                dut.load.valid, dut.load.ready, dut.load.payload.kind, dut.matmul.valid,
                dut.matmul.ready, dut.store.valid, dut.store.ready, dut.status_record.valid,
                dut.status_record.ready):
            load = v[0] and v[1]
            if load or (v[3] and v[4]) or (v[5] and v[6]) or (v[7] and v[8]):
                datapath["busy"] = rng.randint(1, 6)
                if load and v[2] == LoadKind.PARAMS and next(flags):
                    # Pulses while busy, so before the next command can be fetched.
                    busy = datapath["busy"]
                    datapath["pulses"] = rng.sample(range(1, busy + 1), min(busy, 2))
            else:
                datapath["busy"] = max(datapath["busy"] - 1, 0)
            ctx.set(dut.param_error, datapath["busy"] in datapath["pulses"])
            if datapath["busy"] in datapath["pulses"]:
                datapath["pulses"].remove(datapath["busy"])
            ctx.set(dut.datapath_idle, datapath["busy"] == 0 and rng.random() < 0.8)

    async def final_check(ctx):
        await wait_for(ctx, lambda: len(monitor.transfers("commands")) == len(words))
        await ctx.tick().until(~dut.busy)
        await wait_for(ctx, lambda: datapath["busy"] == 0)
        assert (ctx.get(dut.error), ctx.get(dut.error_opcode), ctx.get(dut.executed)) == final

    counts = {name: sum(d[0] == name for d in dispatches)
              for name in ("load", "matmul", "store", "status")}
    assert min(counts.values()) > 5
    taken = {"commands": 0, "dispatches": 0}

    def check(name, payload, extras):
        """Each command is taken in the state the reference had before it; each dispatch
        is the next one the reference made."""
        if name == "commands":
            i = taken["commands"]
            state = (extras["error"], extras["error_opcode"], extras["executed"])
            assert state == before[i], f"before command {i} ({words[i]:#018x})"
        else:
            i = taken["dispatches"]
            assert i < len(dispatches), f"a dispatch to {name} beyond the reference's"
            assert (name, _payload(name, payload, dispatches[i][1])) == dispatches[i], \
                f"dispatch {i}"
        taken["commands" if name == "commands" else "dispatches"] += 1

    sinks = [getattr(dut, "status_record" if name == "status" else name) for name in counts]
    monitor = Monitor({"commands": dut.commands, **dict(zip(counts, sinks, strict=True))},
                      extras={"error": dut.error, "error_opcode": dut.error_opcode,
                              "executed": dut.executed}, on_transfer=check)
    simulate(dut, producer(dut.commands, words, seed=1), final_check,
             *[consumer(sink, counts[name], [], seed=10 + i, probability=0.5)
               for i, (name, sink) in enumerate(zip(counts, sinks, strict=True))],
             background=[datapath_model, monitor.process])
    assert taken == {"commands": len(words), "dispatches": len(dispatches)}


def test_controller_config_wrong():
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        Controller(config=None)
