# amaranth: UnusedElaboratable=no
"""The matmul sequencer against a reference of weight-bank residency and its hand-off rule.

Verifies ``hw/matmul_unit.py``.  A Python reference replays the commands and the
``slot_written`` evictions in program order: a command whose slot a bank still
holds (the bank of the previous command preferred) reuses that bank and requests
no weights; any other loads its tile into the bank the previous command does not
use, requesting rows ``slot * rows + rows - 1`` down to ``slot * rows`` tagged with
that bank; an eviction of a slot makes every bank holding it stale.  Against it,
for random commands (slots repeating, evictions in between, short and long
streams) the test checks

* every weight request (address, bank) and every activation request (address,
  accumulator row from ``acc_addr``, ``accumulate``, bank) in order;
* the hand-off, cycle by cycle from a trace: the streamer starts a command in the
  cycle after the first clock edge at which the preloader has requested the
  command's last weight row (or taken it, for a reused bank), ``weights_pending``
  is low and the streamer is free (idle, or sending its last request): never
  earlier, never later;
* ``cmd.ready`` (the preloader holds no command), ``weight_requests.valid`` and
  ``preloading`` (weight rows left to request), ``act_requests.valid`` (the
  streamer has requests left) and ``busy`` in every cycle;

and that the random run loaded, reused both banks, reloaded after an eviction,
handed off back to back and after waiting for ``weights_pending``, and preloaded
while streaming.  Commands and evictions see random idle cycles, both request
streams random backpressure, ``written_slot`` random values while
``slot_written`` is low, and ``weights_pending`` stays high for a random while
after each weight request (and flickers), as a weight reader whose row the array
has not taken yet holds it.  A directed run without stalls checks that activation
requests keep coming every cycle across tile changes (the preload is hidden).
"""

import math
import random
from collections import Counter

import pytest
from harness import Monitor, Trace, random_ready, simulate, stream_signals, wait_for, with_tail
from streams import StreamStalls, stream_put

from hw.config import NpuConfig
from hw.matmul_unit import MatmulUnit

CONFIGS = [NpuConfig(rows=3, cols=2, act_depth=16, weight_tiles=3, acc_depth=12),
           NpuConfig(rows=1, cols=4, act_depth=8, weight_tiles=3, acc_depth=32),
           NpuConfig(rows=4, cols=4, act_depth=32, weight_tiles=4, acc_depth=32)]


def _command(config, rng, slot, count):
    return {"act_addr": rng.randint(0, config.act_depth - count), "count": count,
            "slot": slot, "acc_addr": rng.randint(0, config.acc_depth - count),
            "accumulate": rng.randrange(2)}


def _script(config, rng, count=40):
    """Commands with evictions (``("evict", slot)``) in between: slots often repeat,
    streams are short or long."""
    script, recent = [], [0]
    longest = min(config.act_depth, config.acc_depth)
    for _ in range(count):
        if rng.random() < 0.25:
            script.append(("evict", rng.choice(recent + [rng.randrange(config.weight_tiles)])))
        slot = rng.choice(recent) if rng.random() < 0.5 else rng.randrange(config.weight_tiles)
        recent = (recent + [slot])[-2:]
        n = rng.choice([rng.randint(1, 3), rng.randint(config.rows, config.rows + 4)])
        script.append(("cmd", _command(config, rng, slot, min(n, longest))))
    return script


def _reference(config, script):
    """Each command's bank, weight requests and activation requests, and how often each
    residency case came up."""
    rows = config.rows
    holds = [None, None]      # the slot each bank holds, None once stale
    unevicted = [None, None]  # the same, ignoring evictions
    last, plans, seen = 0, [], Counter()
    for kind, item in script:
        if kind == "evict":
            holds = [None if slot == item else slot for slot in holds]
            continue
        slot = item["slot"]
        if holds[last] == slot:
            bank, load = last, False
        elif holds[1 - last] == slot:
            bank, load = 1 - last, False
        else:
            bank, load = 1 - last, True
            holds[bank] = slot
        seen["load" if load else "reuse_last" if bank == last else "reuse_other"] += 1
        seen["reload_after_eviction"] += load and slot in unevicted
        if load:
            unevicted[bank] = slot
        last = bank
        plans.append({
            "weights": [(slot * rows + rows - 1 - i, bank) for i in range(rows)] if load else [],
            "acts": [(item["act_addr"] + i, item["acc_addr"] + i, item["accumulate"], bank)
                     for i in range(item["count"])]})
    return plans, seen


#: A request as the reference writes it.
KEYS = {"weights": lambda p: (p.addr, p.tag.bank),
        "acts": lambda p: (p.addr, p.tag.acc.addr, p.tag.acc.accumulate, p.tag.bank)}


def _check_schedule(trace, plans):
    """Check the requests and the per-cycle outputs against ``plans`` and the hand-off
    rule; return how often each timing case came up."""
    rows = trace.rows
    w_rows, a_rows = trace.transfers("weights"), trace.transfers("acts")
    for name, transfers in (("weights", w_rows), ("acts", a_rows)):
        got = [KEYS[name](rows[r][f"{name}.payload"]) for r in transfers]
        assert got == [request for plan in plans for request in plan[name]], name

    expect = {name: [0] * len(rows) for name in ("held", "preloading", "streaming")}
    seen = Counter()
    taken = trace.transfers("cmd")
    assert len(taken) == len(plans)
    free, wi, ai = 0, 0, 0      # free: first row the streamer may take a command
    for t, plan in zip(taken, plans, strict=True):
        ws = w_rows[wi:wi + len(plan["weights"])]
        burst = a_rows[ai:ai + len(plan["acts"])]
        wi, ai = wi + len(ws), ai + len(burst)
        assert all(r > t for r in ws)
        loaded = max([t] + ws)              # the preloader's last row for this command
        # The hand-off: the first row after `loaded`, with the streamer free, in which
        # no weight row is pending.
        handoff = next(r for r in range(max(loaded + 1, free), len(rows))
                       if not rows[r]["weights_pending"])
        seen["waited_for_weights"] += any(rows[r]["weights_pending"]
                                          for r in range(max(loaded + 1, free), handoff))
        seen["back_to_back"] += handoff == free and t > taken[0]
        for r in range(t + 1, handoff + 1):
            expect["held"][r] = 1
        # The activation rows the command will read: reported while held and streamed.
        rows_read = (rows[burst[0]]["acts.payload"].addr, len(burst))
        for r in range(t + 1, handoff + 1):
            assert (rows[r]["queued.addr"], rows[r]["queued.end"] - rows[r]["queued.addr"]) \
                == rows_read, r
        for r in range(handoff + 1, burst[-1] + 1):
            assert (rows[r]["streaming.addr"],
                    rows[r]["streaming.end"] - rows[r]["streaming.addr"]) == rows_read, r
        for r in range(t + 1, loaded + 1):
            expect["preloading"][r] = 1
        for r in range(handoff + 1, burst[-1] + 1):
            expect["streaming"][r] = 1
        free = burst[-1]
    seen["preloaded_while_streaming"] = sum(expect["streaming"][r] for r in w_rows)
    for r, row in enumerate(rows):
        held, preloading, streaming = (expect[n][r] for n in ("held", "preloading", "streaming"))
        assert row["cmd.ready"] == (not held), f"cmd.ready in cycle {r}"
        assert row["weights.valid"] == row["preloading"] == preloading, f"preloading in cycle {r}"
        assert row["acts.valid"] == streaming, f"act_requests.valid in cycle {r}"
        assert row["busy"] == (held or streaming), f"busy in cycle {r}"
        assert row["queued.valid"] == held and row["streaming.valid"] == streaming, r
    seen["weights_stalled"] = sum(r["weights.valid"] and not r["weights.ready"] for r in rows)
    seen["acts_stalled"] = sum(r["acts.valid"] and not r["acts.ready"] for r in rows)
    seen["commands_waited"] = sum(r["cmd.valid"] and not r["cmd.ready"] for r in rows)
    return seen


def _run(config, script, *, seed, stall_probability, pending):
    """Simulate ``script``; ``pending(rng, requested)`` gives ``weights_pending`` for the
    next cycle after each edge (``requested``: a weight request transferred).  Return the
    trace and the reference plans."""
    plans, _ = _reference(config, script)
    dut = MatmulUnit(config=config)
    rng = random.Random(seed)

    async def host(ctx):
        """Commands and evictions in program order, never at the same clock edge."""
        stalls = StreamStalls(seed=seed + 1, probability=stall_probability)
        for kind, item in script:
            if kind == "cmd":
                await stream_put(ctx, dut.cmd, item, stalls)
                continue
            for _ in range(stalls.idle_cycles()):
                await ctx.tick()
            ctx.set(dut.slot_written, 1)
            ctx.set(dut.written_slot, item)
            await ctx.tick()
            ctx.set(dut.slot_written, 0)
            ctx.set(dut.written_slot, rng.randrange(256))   # ignored while low

    async def weight_reader(ctx):
        async for _, _, valid, ready in ctx.tick().sample(dut.weight_requests.valid,
                                                          dut.weight_requests.ready):
            ctx.set(dut.weights_pending, pending(rng, valid and ready))

    expected = {name: [request for plan in plans for request in plan[name]]
                for name in KEYS}
    got = {name: [] for name in KEYS}

    def check(name, payload, extras):
        """Fail at the first request that differs from the reference's."""
        request, i = KEYS[name](payload), len(got[name])
        assert i < len(expected[name]), f"{name}: request {request} beyond the reference's"
        assert request == expected[name][i], f"{name} request {i}"
        got[name].append(request)

    async def all_requested(ctx):
        await wait_for(ctx, lambda: got == expected)

    trace = Trace({**stream_signals("cmd", dut.cmd, payload=False),
                   **stream_signals("weights", dut.weight_requests),
                   **stream_signals("acts", dut.act_requests),
                   "weights_pending": dut.weights_pending, "preloading": dut.preloading,
                   "busy": dut.busy,
                   **{f"{unit}.{field}": getattr(getattr(dut, f"{unit}_rows"), field)
                      for unit in ("queued", "streaming") for field in ("valid", "addr", "end")}})
    monitor = Monitor({"weights": dut.weight_requests, "acts": dut.act_requests},
                      on_transfer=check)
    consumers = [random_ready(stream, math.inf, [], seed=seed + 2 + i,
                              probability=stall_probability)
                 for i, stream in enumerate((dut.weight_requests, dut.act_requests))]
    simulate(dut, host, with_tail(all_requested),
             background=[*consumers, weight_reader, trace.process, monitor.process],
             max_cycles=20_000)
    return trace, plans


class _HeldRow:
    """``weights_pending`` of a weight reader whose row waits 1..5 cycles for the array,
    flickering high at random besides."""

    def __init__(self):
        self.hold = 0

    def __call__(self, rng, requested):
        self.hold = rng.randint(1, 5) if requested else max(self.hold - 1, 0)
        return self.hold > 0 or rng.random() < 0.15


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"rows{c.rows}")
def test_matmul_unit_residency_and_handoff(config):
    rng = random.Random(config.rows)
    script = _script(config, rng)
    _, residency = _reference(config, script)
    assert min(residency[k] for k in ("load", "reuse_last", "reuse_other",
                                      "reload_after_eviction")) > 0, residency
    trace, plans = _run(config, script, seed=config.rows, stall_probability=0.5,
                        pending=_HeldRow())
    seen = _check_schedule(trace, plans)
    assert min(seen[k] for k in ("waited_for_weights", "back_to_back",
                                 "preloaded_while_streaming", "weights_stalled",
                                 "acts_stalled", "commands_waited")) > 0, seen


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"rows{c.rows}")
def test_matmul_unit_hides_the_preload(config):
    # No stalls; a weight row is pending for one cycle after its request, as when the
    # array takes it at once.  Streams of rows + 3 vectors hide every tile change.
    rng = random.Random(config.rows + 100)
    count = config.rows + 3
    slots = [0, 1, 0, 0, 1, 1] + [i % config.weight_tiles for i in range(6)]
    script = [("cmd", _command(config, rng, slot, count)) for slot in slots]
    trace, plans = _run(config, script, seed=7, stall_probability=0,
                        pending=lambda rng, requested: requested)
    _check_schedule(trace, plans)
    a_rows = trace.transfers("acts")
    assert a_rows == list(range(a_rows[0], a_rows[0] + len(slots) * count))
    assert len(trace.transfers("weights")) > 2 * config.rows


def test_matmul_unit_config_wrong():
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        MatmulUnit(config=None)
