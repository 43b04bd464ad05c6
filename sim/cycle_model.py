"""Cycle model of the Npu: exact clock counts when no stream stalls.

The controller dispatches commands in order, each as soon as the hazards in
:class:`hw.controller.Controller` allow, and the units then overlap: a weight tile
loads while the array streams, the next tile preloads into the other weight bank,
a store drains while the next weights load.  :class:`CycleModel` replays that
schedule with the latency of every unit (see the unit docstrings) and
``tests/sim/test_cycle_model.py`` checks it against the RTL's own cycle counter.

Time is counted in cycles from the first cycle a command is offered; a value
``busy_through`` means the unit reports busy up to and including that cycle.
The host is assumed never to stall the streams; with stalls the chip takes
longer and these counts are a lower bound.
"""

import enum
from dataclasses import asdict, dataclass, fields

from hw.accumulator import WRITE_LATENCY as ACCUMULATOR_WRITE_LATENCY
from hw.config import PARAM_RECORD_BYTES, STATUS_RECORD_BYTES, NpuConfig
from hw.isa import Opcode
from hw.requantizer import QUEUE_DEPTH as REQUANTIZER_QUEUE
from hw.requantizer import STAGES as REQUANTIZER_STAGES
from hw.skid_buffer import LATENCY as DATA_OUT_LATENCY

__all__ = ["Outcome", "CycleModel", "Breakdown"]

_NEVER = -(1 << 40)
#: Attributes of a run that hold cycle numbers; a negative one means "has not happened"
#: (every event of a run is at cycle 0 or later).
_CLOCKS = ("last_dispatch", "load_through", "preload_through", "preloader_free",
           "stream_last", "matmul_through", "compute_through", "store_through",
           "serializer_through", "output_through", "bank_last_accept", "error_visible",
           "act_read_last")
#: From a STORE's dispatch to the requantizer taking its first row: store unit request,
#: accumulator read.
_STORE_TO_REQUANTIZER = 2


class Outcome(enum.Enum):
    """What the controller did with a command."""
    EXECUTED = "executed"
    MALFORMED = "malformed"   #: latched an error code (waits for pending loads first)
    SKIPPED = "skipped"       #: consumed while an error was latched


@dataclass
class Breakdown:
    """Cycles attributed to what the array was doing (for reports)."""
    streaming: int = 0        #: cycles an activation vector entered the array
    matmuls: int = 0
    preloads: int = 0         #: weight tiles shifted into a bank
    reused_tiles: int = 0     #: MATMULs whose tile was already resident


class CycleModel:
    """Replays the Npu's command schedule.

    Parameters
    ----------
    config : NpuConfig
    """

    def __init__(self, config=None):
        self.config = config if config is not None else NpuConfig()
        self.reset()

    def reset(self):
        """A chip fresh out of reset, before its first command."""
        self.resident = [None, None]    # weight slot each bank holds, if still valid
        self.last_bank = 0
        self.store = None               # the latest STORE (its rows and parameter set)
        self.breakdown = Breakdown()
        self.start_run()

    def start_run(self):
        """Start counting again on an idle chip (the weight banks keep their tiles)."""
        self.commands = 0
        self.last_dispatch = 0          # the first command is fetched in cycle 0
        self.load_through = _NEVER      # load unit and deserializer
        self.preload_through = _NEVER   # weight rows still being requested
        self.preloader_free = 0         # first cycle the preloader takes a command
        self.stream_last = _NEVER       # cycle of the streamer's last request
        self.matmul_through = _NEVER    # preloader or streamer busy
        self.compute_through = _NEVER   # anything of a matmul still in flight
        self.store_through = _NEVER     # store unit, accumulator reads, requantizer
        self.serializer_through = _NEVER  # serializer sending beats
        self.output_through = _NEVER    # the last beat through the data-out skid buffer
        self.bank_last_accept = [_NEVER, _NEVER]
        # Activation rows of the two latest MATMULs and the cycle of their last read.
        self.act_read_rows = []
        self.act_read_last = []
        self.error_visible = _NEVER     # when a BAD_PARAM still being loaded latches

    def snapshot(self):
        """What decides the rest of the schedule, as a hashable value relative to the
        latest dispatch (counters excluded).

        Two models with equal snapshots take the same cycles for the same commands from
        here on, shifted in time by the difference of their ``last_dispatch``: the model
        counts time only relative to earlier events.  A clock far enough in the past
        that it can no longer delay a command is "past", however long ago: every clock
        is compared with a later dispatch cycle, a bank's last accept plus the weight
        hold (less than the array's latency) with a later preload.
        """
        origin = self.last_dispatch
        past = origin - self.config.array_latency - 1

        def relative(value):
            if isinstance(value, list):
                return tuple(map(relative, value))
            return value - origin if value > past else "past"

        return tuple((name, relative(value) if name in _CLOCKS else repr(value))
                     for name, value in sorted(vars(self).items())
                     if name not in ("config", "commands", "breakdown"))

    def counts(self):
        """The counters, which only count up: ``commands`` and the :class:`Breakdown`."""
        return {"commands": self.commands, **asdict(self.breakdown)}

    def shift(self, cycles, counts):
        """The state ``cycles`` later, with ``counts`` (as :meth:`counts` names them) added:
        what commands that took ``cycles`` and counted ``counts`` would leave behind, when
        they left the :meth:`snapshot` as it was."""
        def later(value):
            if isinstance(value, list):
                return list(map(later, value))
            return value + cycles if value >= 0 else value

        for name in _CLOCKS:
            setattr(self, name, later(getattr(self, name)))
        self.commands += counts.get("commands", 0)
        for f in fields(self.breakdown):
            setattr(self.breakdown, f.name, getattr(self.breakdown, f.name)
                    + counts.get(f.name, 0))

    @property
    def end(self):
        """The last busy cycle so far."""
        return max(self.last_dispatch, self.load_through, self.matmul_through,
                   self.compute_through, self.store_through, self.output_through)

    @property
    def cycles(self):
        """Cycles from the first command of the run to idle."""
        return self.end + 1 if self.commands else 0

    def step(self, instruction, outcome=Outcome.EXECUTED, *, bad_record=None):
        """Dispatch one command; returns its dispatch cycle.

        Parameters
        ----------
        outcome : Outcome
        bad_record : int, optional
            For a LOAD_PARAMS that raised BAD_PARAM: the index of the invalid record.
        """
        c = self.config
        self.commands += 1
        earliest = self.last_dispatch + 1
        load_idle = self.load_through + 1
        if outcome is Outcome.SKIPPED:
            # A command is skipped once the error shows; BAD_PARAM shows only when
            # the invalid record is written.
            return self._dispatched(max(earliest, self.error_visible))
        if outcome is Outcome.MALFORMED:
            return self._dispatched(max(earliest, load_idle))
        op = instruction.OPCODE
        if op == Opcode.LOAD_ACT:
            # Wait for MATMULs that will still read the rows (at most two are in the unit).
            reads_done = max([last + 1 for (addr, count), last in
                              zip(self.act_read_rows, self.act_read_last, strict=True)
                              if instruction.addr < addr + count
                              and addr < instruction.addr + instruction.count], default=_NEVER)
            d = self._dispatched(max(earliest, load_idle, reads_done))
            self._load(d, instruction.count * c.beats(instruction.length))
        elif op == Opcode.LOAD_WEIGHT:
            d = self._dispatched(max(earliest, load_idle, self.preload_through + 1))
            self.resident = [None if slot == instruction.slot else slot
                             for slot in self.resident]
            self._load(d, instruction.k * c.beats(instruction.n) + c.rows - instruction.k)
        elif op == Opcode.LOAD_PARAMS:
            same_set = self.store is not None and self.store.param_set == instruction.param_set
            store_done = self.store_through + 1 if same_set else _NEVER
            d = self._dispatched(max(earliest, load_idle, store_done))
            record_beats = c.beats(PARAM_RECORD_BYTES)
            self._load(d, instruction.count * record_beats)
            if bad_record is not None:
                self.error_visible = d + 3 + (bad_record + 1) * record_beats
        elif op == Opcode.MATMUL:
            store_done = self.store_through + 1 if self._store_overlaps(instruction) else _NEVER
            d = self._dispatched(max(earliest, load_idle, store_done, self.preloader_free))
            self._matmul(d, instruction)
        elif op == Opcode.STORE:
            d = self._dispatched(max(earliest, load_idle, self.store_through + 1,
                                     self.compute_through + 1))
            self._store(d, instruction)
        elif op == Opcode.READ_STATUS:
            # The serializer takes the record in the cycle its last beat leaves.
            d = self._dispatched(max(earliest, load_idle, self.store_through + 1,
                                     self.serializer_through))
            self._serialized(d + c.beats(STATUS_RECORD_BYTES))
        elif op == Opcode.FENCE:
            d = self._dispatched(max(earliest, self.end + 1))
        elif op == Opcode.CLEAR_ERROR:
            d = self._dispatched(max(earliest, load_idle))
        else:  # NOP
            d = self._dispatched(earliest)
        return d

    def _store_overlaps(self, matmul):
        """Whether the latest STORE reads accumulator rows ``matmul`` writes."""
        s = self.store
        return (s is not None and matmul.acc_addr < s.acc_addr + s.count
                and s.acc_addr < matmul.acc_addr + matmul.count)

    def _dispatched(self, cycle):
        self.last_dispatch = cycle
        return cycle

    def _load(self, d, beats):
        # Request the deserializer, take the beats, write the last vector (+ zero rows).
        self.load_through = d + 2 + beats

    def _matmul(self, d, ins):
        c = self.config
        latency = c.array_latency
        hits = [b for b in (self.last_bank, 1 - self.last_bank)
                if self.resident[b] == ins.slot]
        self.breakdown.matmuls += 1
        if hits:
            bank = hits[0]
            weights_in = d + 1
            self.breakdown.reused_tiles += 1
        else:
            bank = 1 - self.last_bank
            self.resident[bank] = ins.slot
            self.breakdown.preloads += 1
            # The first row waits until every vector using the bank has its weights.
            first_accept = max(d + 2, self.bank_last_accept[bank] + c.weight_hold + 1)
            self.preload_through = d + 1 if c.rows == 1 else first_accept + c.rows - 2
            weights_in = first_accept + c.rows  # cycle after the last row entered
        self.last_bank = bank
        handoff = max(weights_in, self.stream_last)
        self.preloader_free = handoff + 1
        self.stream_last = handoff + ins.count
        self.act_read_rows = (self.act_read_rows + [(ins.act_addr, ins.count)])[-2:]
        self.act_read_last = (self.act_read_last + [self.stream_last])[-2:]
        self.matmul_through = handoff + ins.count
        last_accept = handoff + ins.count + 1
        self.bank_last_accept[bank] = last_accept
        # Through the array, then the accumulator's read-modify-write.
        self.compute_through = last_accept + latency + ACCUMULATOR_WRITE_LATENCY
        self.breakdown.streaming += ins.count

    def _serialized(self, through):
        """The serializer sends beats through cycle ``through`` (and takes the next
        vector in that cycle); the skid buffer holds the last one a cycle longer."""
        self.serializer_through = through
        self.output_through = through + DATA_OUT_LATENCY

    def _store(self, d, ins):
        """The rows of a STORE through the requantizer (``hw/requantizer.py``'s timing)
        into the serializer, which takes a row when it has sent the last one's beats."""
        c = self.config
        self.store = ins
        beats = c.beats(ins.n * (4 if ins.raw else 1))
        taken = d + _STORE_TO_REQUANTIZER
        free = self.serializer_through
        if ins.raw:
            # A raw row leaves from the holding register; the next follows it there.
            last = max(taken + 1, free) + (ins.count - 1) * beats
        else:
            cycles = c.requant_cycles(ins.n)
            offered = taken + REQUANTIZER_STAGES + cycles + 1
            if cycles <= beats:
                # The requantizer keeps up: the serializer sets the pace (the queue holds
                # enough rows that it never waits for one).
                last = max(offered, free) + (ins.count - 1) * beats
            elif free <= offered:
                # The lanes set the pace and the serializer takes each row as it comes.
                last = offered + (ins.count - 1) * cycles
            else:
                last = self._late_requantized_rows(taken, ins.count, cycles, beats, free)
        self.store_through = last
        self._serialized(last + beats)

    @staticmethod
    def _late_requantized_rows(taken, count, cycles, beats, free):
        """The cycle the serializer takes the last row of a requantized STORE whose lanes
        are slower than its beats but whose first row waits for the serializer: row by
        row, each taking a credit (a queue place) freed the cycle after a row leaves."""
        accepted, left = [], []
        for k in range(count):
            a = taken if k == 0 else accepted[-1] + cycles
            if k >= REQUANTIZER_QUEUE:
                a = max(a, left[k - REQUANTIZER_QUEUE] + 1)
            ready = free if k == 0 else left[-1] + beats
            accepted.append(a)
            left.append(max(a + REQUANTIZER_STAGES + cycles + 1, ready))
        return left[-1]
