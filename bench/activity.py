"""What the array does in every cycle: :class:`ArrayActivity` drives the cycle model."""

from hw.isa import Opcode
from sim.cycle_model import CycleModel

__all__ = ["ACTIVITIES", "ArrayActivity"]

#: What the array does in a cycle; every cycle of a run lands in exactly one.  The gaps
#: between two MATMULs are named after the commands issued between them.
ACTIVITIES = {
    "streaming": "an activation vector enters the array",
    "fill": "before the first vector (first loads, weight preload)",
    "weights": "waiting for the next weight tile",
    "store": "next N tile (drain, store, parameters)",
    "activations": "next M block (activations loaded)",
    "drain": "after the last vector (pipeline, accumulator, store)",
}


class ArrayActivity:
    """Drives a :class:`~sim.cycle_model.CycleModel` and accounts for every array cycle.

    Each cycle of a run lands in one of :data:`ACTIVITIES`: an activation vector enters
    the array (streaming), or the array waits before its first vector, between two
    MATMULs, or after its last vector.  A wait between two MATMULs is named after what
    was issued between them: activation loads (a new M block), a store or parameter
    load (the next N tile), otherwise only weights.

    Parameters
    ----------
    config : NpuConfig
    """

    def __init__(self, config):
        self.config = config
        self.model = CycleModel(config)
        self.parts = dict.fromkeys(ACTIVITIES, 0)
        self.finished_cycles = 0        # of the runs before the current one
        #: Repetitions :meth:`repeat` accounted for without replaying them.
        self.repetitions_skipped = 0
        self._start_counting()

    def _start_counting(self):
        self._first_vector = None       # cycle the run's first vector entered the array
        self._last_vector = None
        self._since_matmul = frozenset()   # opcodes issued since the last MATMUL

    def start_run(self):
        """Close the current run and start a new one on the idle chip, as a new
        ``execute`` call does (the weight banks keep their tiles)."""
        cycles, fill, drain = self._run_edges()
        self.finished_cycles += cycles
        self.parts["fill"] += fill
        self.parts["drain"] += drain
        self.model.start_run()
        self._start_counting()

    def _run_edges(self):
        """Cycles of the current run, and its cycles before the first / after the last vector."""
        cycles = self.model.cycles
        if self._first_vector is None:
            return cycles, cycles, 0
        return cycles, self._first_vector, cycles - 1 - self._last_vector

    def step(self, instruction):
        """Dispatch one well-formed command (a bench program raises no error)."""
        self.model.step(instruction)
        if instruction.OPCODE != Opcode.MATMUL:
            self._since_matmul |= {instruction.OPCODE}
            return
        # The streamer sends vectors in the cycles after the handoff, up to stream_last.
        last = self.model.stream_last
        first = last - instruction.count + 1
        if self._last_vector is None:
            self._first_vector = first
        else:
            self.parts[self._wait_cause()] += first - self._last_vector - 1
        self.parts["streaming"] += instruction.count
        self._last_vector = last
        self._since_matmul = frozenset()

    def _wait_cause(self):
        if Opcode.LOAD_ACT in self._since_matmul:
            return "activations"
        if self._since_matmul & {Opcode.STORE, Opcode.LOAD_PARAMS}:
            return "store"
        return "weights"

    def repeat(self, instructions, times):
        """:meth:`step` through ``instructions`` ``times`` times in a row, exactly, but
        replaying only until the schedule repeats itself.

        The model is deterministic and counts time only relative to earlier events, so
        once the state at the start of a repetition equals the state ``period``
        repetitions earlier shifted by ``delta`` cycles, every further ``period``
        repetitions shift it by ``delta`` again and add the same counts.  Those are
        added without replaying them; the rest are replayed.
        """
        seen = {}
        done = 0
        while done < times:
            key, origin = self._schedule_key()
            if key in seen:
                earlier, earlier_origin, earlier_counts = seen[key]
                period = done - earlier
                jumps = (times - done) // period
                counts = self._counts()
                self._advance(jumps * (origin - earlier_origin),
                              {name: jumps * (value - earlier_counts[name])
                               for name, value in counts.items()})
                self.repetitions_skipped += jumps * period
                done += jumps * period
                seen.clear()    # fewer than a period left: replay them
            else:
                seen[key] = (done, origin, self._counts())
            if done < times:
                for instruction in instructions:
                    self.step(instruction)
                done += 1

    def _schedule_key(self):
        """What decides the rest of the schedule, relative to the last dispatch."""
        origin = self.model.last_dispatch
        last = None if self._last_vector is None else self._last_vector - origin
        return (self.model.snapshot(), self._since_matmul, self._first_vector is None,
                last), origin

    def _counts(self):
        counts = {("model", name): value for name, value in self.model.counts().items()}
        counts.update({("parts", name): value for name, value in self.parts.items()})
        return counts

    def _advance(self, delta, added):
        """The state ``delta`` cycles later, with ``added`` counts more."""
        self.model.shift(delta, {name: value for (group, name), value in added.items()
                                 if group == "model"})
        if self._last_vector is not None:
            self._last_vector += delta
        for (group, name), value in added.items():
            if group == "parts":
                self.parts[name] += value

    def summary(self):
        """Totals over every run so far, as ``results.json`` stores them.

        Returns
        -------
        dict
            ``cycles``, ``commands``, ``parts`` (cycles by :data:`ACTIVITIES`, adding
            up to ``cycles``), ``matmuls``, ``preloads`` and ``reused_tiles``.
        """
        cycles, fill, drain = self._run_edges()
        parts = dict(self.parts)
        parts["fill"] += fill
        parts["drain"] += drain
        breakdown = self.model.breakdown
        return {"cycles": self.finished_cycles + cycles, "commands": self.model.commands,
                "parts": parts, "matmuls": breakdown.matmuls, "preloads": breakdown.preloads,
                "reused_tiles": breakdown.reused_tiles}
