"""The host side of one run: what every simulator adapter drives into the Npu, cycle by cycle.

:class:`HostLoop` owns the pending command words and data-in beats, the data-out beats,
the three streams' pause generators, the completion condition and the watchdog.  A
simulator adapter (Amaranth's testbench ``ctx`` in :mod:`sim.amaranth_runner`, cocotb's
handles in :mod:`sim.cocotb_harness`) only samples the chip's ports at each rising edge,
hands the values to :meth:`HostLoop.step` and drives what the loop's attributes say.

Contract
--------
This is what any reimplementation of the loop (for example in C++ next to a Verilator
model) must do, cycle for cycle.

Driven by the loop: ``commands.valid``/``commands.payload``, ``data_in.valid``/
``data_in.payload`` and ``data_out.ready`` (attributes ``commands_valid``,
``commands_payload``, ``data_in_valid``, ``data_in_payload``, ``data_out_ready``).

Sampled at each rising edge, with the values the chip's flip-flops see at that edge
(just before it; cocotb's ``RisingEdge`` and Amaranth's ``ctx.tick().sample()`` both
give these): ``commands.ready``, ``data_in.ready``, ``data_out.valid``,
``data_out.payload``, ``executed`` and ``busy``.  An adapter may skip sampling a value the
loop will not look at and pass None: an input's ready while the loop does not drive its
valid, ``data_out.payload`` unless both ``data_out.valid`` and ``data_out_ready`` are
high, ``executed`` and ``busy`` while :attr:`HostLoop.needs_status` is false.

Before the first edge the adapter drives the values the constructor set (cycle 0).
Then at every edge :meth:`HostLoop.step` does, in this order:

1. *Transfers.*  An input item was taken if the loop drove its valid and the sampled
   ready is high; it is never offered again.  A data-out beat arrived if the loop drove
   ``data_out.ready`` and the sampled ``data_out.valid`` is high; its payload is kept.
2. *Completion.*  The run is done when every command has been taken, the sampled
   ``executed`` equals its value at the start plus the number of commands (modulo
   2**32), ``busy`` is low and ``data_out.valid`` is low.  The loop then drives every
   valid and ``data_out.ready`` low and returns True.  Data-in beats nobody took are
   dropped, as the golden model drops them, so nothing of one run leaks into the next.
3. *Watchdog.*  Progress is (commands taken, data-in beats taken, data-out beats).
   After more than ``max_idle_cycles`` consecutive edges without a transfer the loop
   raises :class:`TimeoutError` with the progress and the totals.
4. *Next cycle.*  Each stream's pause iterator is advanced exactly once per cycle,
   commands, data in, data out in that order (cycle 0 included; an exhausted iterator
   means no more pauses).  An input whose valid is low (nothing offered, or the offer was
   just taken) offers its next item, valid high and the item as payload, unless its pause
   value is true or no items remain.  An offer stays up until it is taken, whatever the
   pause says, as the stream protocol requires.  ``data_out.ready`` is high unless the
   data-out pause value is true.

Reset.  Between runs (and after a run that raised, to recover the chip) an adapter
may reset the chip: it drives every valid and ``data_out.ready`` low, raises ``rst`` for
:data:`RESET_EDGES` rising edges and lowers it for one more edge.  The chip is then in
the state ``RESET_STATE`` of :mod:`hw.isa` describes (registers cleared, buffers kept);
the next run starts from the next cycle.  A session starts in that state (the RTL
sessions with the same sequence, Amaranth's simulator from the initial values).

Pause generators are as cocotbext-axi's ``set_pause_generator``: any iterable of
booleans, one per cycle, true meaning "pause this cycle" (no new offer on an input,
ready low on the output).  :func:`stream_pauses` gives each stream without its own
iterable :func:`random_pauses` when ``stall_probability`` is non-zero.
"""

import numbers
import random

from hw.beats import from_beats
from hw.isa import status_shape
from sim.run_result import RunResult

__all__ = ["STREAMS", "RESET_EDGES", "HostLoop", "RunTimeout", "random_pauses",
           "stream_pauses", "counter_difference"]

#: The chip's streams, in the order pause iterators are given and advanced.
STREAMS = ("commands", "data_in", "data_out")

#: Rising edges the adapters hold ``rst`` high for (see the contract's *Reset*).
RESET_EDGES = 3

#: The chip's counters (``executed``, ``cycles``, ``array_cycles``) are as wide as the
#: status record's command count and wrap around.
_COUNTER_MASK = (1 << status_shape("commands").width) - 1


class RunTimeout(TimeoutError):
    """The watchdog tripped: the chip made no progress (for example waiting for data-in
    that never comes).  The chip stays as it is until the adapter resets it.

    Attributes
    ----------
    result : sim.run_result.RunResult or None
        What the run produced before it stopped (the data-out bytes, the chip's status
        then, the data-in bytes taken), where the adapter reports it.
    """

    def __init__(self, message, *, result=None):
        super().__init__(message)
        self.result = result


def counter_difference(now, start):
    """Counts between two readings of a chip counter, across its wrap-around."""
    return (int(now) - int(start)) & _COUNTER_MASK


def _check_probability(probability, name):
    if isinstance(probability, bool) or not isinstance(probability, numbers.Real):
        raise TypeError(f"{name} must be a number, not {probability!r}")
    if not 0 <= probability < 1:
        raise ValueError(f"{name} must be at least 0 and below 1, not {probability!r}")


def random_pauses(probability, *, seed=0):
    """An endless pause iterator: each cycle pauses with chance ``probability``.

    Parameters
    ----------
    probability : float
        At least 0, below 1 (a stream paused for ever would never finish).
    seed : int or str
        Seed of the iterator's own :class:`random.Random`.

    Raises
    ------
    TypeError
        If ``probability`` is not a number or ``seed`` not an int or str.
    ValueError
        If ``probability`` is outside ``[0, 1)``.
    """
    _check_probability(probability, "probability")
    if isinstance(seed, bool) or not isinstance(seed, (int, str)):
        raise TypeError(f"seed must be an int or a str, not {seed!r}")
    return _random_pauses(float(probability), random.Random(seed))


def _random_pauses(probability, rng):
    draw = rng.random
    while True:
        yield draw() < probability


def stream_pauses(*, stall_probability=0.0, seed=0, commands_pause=None, data_in_pause=None,
                  data_out_pause=None):
    """The three streams' pause iterators, in :data:`STREAMS` order (None: never pauses).

    A stream given its own iterable uses it; the others pause at random with chance
    ``stall_probability`` per cycle, each from its own generator seeded by ``seed`` and the
    stream's name.

    Raises
    ------
    TypeError
        If a pause argument is not iterable, or ``stall_probability`` not a number.
    ValueError
        If ``stall_probability`` is outside ``[0, 1)``.
    """
    _check_probability(stall_probability, "stall_probability")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, not {seed!r}")
    pauses = []
    for name, given in zip(STREAMS, (commands_pause, data_in_pause, data_out_pause),
                           strict=True):
        if given is None:
            pauses.append(random_pauses(stall_probability, seed=f"{seed}/{name}")
                          if stall_probability else None)
            continue
        try:
            pauses.append(iter(given))
        except TypeError:
            raise TypeError(f"{name}_pause must be an iterable of booleans, "
                            f"not {given!r}") from None
    return tuple(pauses)


class HostLoop:
    """One run's host side (see the module docstring for the contract).

    Parameters
    ----------
    commands : sequence of int
        Command words to send.
    data_in : sequence of int
        Data-in beats to offer (:func:`hw.beats.to_beats`).
    executed : int
        The chip's ``executed`` counter before the run.
    pauses : tuple of three iterators or None
        Pause iterators of the commands, data-in and data-out streams
        (:func:`stream_pauses`).
    max_idle_cycles : int
        Raise :class:`TimeoutError` after more cycles than this without a transfer.

    Attributes
    ----------
    commands_valid, commands_payload, data_in_valid, data_in_payload, data_out_ready : int
        What to drive during the next cycle.
    needs_status : bool
        Whether :meth:`step` looks at ``executed`` and ``busy`` (every command is taken).
    commands_taken, data_in_taken : int
        Items the chip has taken.
    data_out : list of int
        Data-out beats received.
    """

    def __init__(self, *, commands, data_in, executed, pauses=(None, None, None),
                 max_idle_cycles=100_000):
        if isinstance(max_idle_cycles, bool) or not isinstance(max_idle_cycles, int) \
                or max_idle_cycles <= 0:
            raise ValueError(f"max_idle_cycles must be a positive integer, "
                             f"not {max_idle_cycles!r}")
        if len(pauses) != len(STREAMS):
            raise ValueError(f"pauses must hold {len(STREAMS)} iterators or None, "
                             f"not {len(pauses)}")
        self._commands = [int(c) for c in commands]
        self._data_in = [int(b) for b in data_in]
        self._target = (int(executed) + len(self._commands)) & _COUNTER_MASK
        self._pauses = tuple(pauses)
        self.max_idle_cycles = max_idle_cycles
        self.commands_taken = self.data_in_taken = 0
        self.data_out = []
        self.idle_cycles = 0
        self.needs_status = not self._commands
        self.commands_valid = self.data_in_valid = self.data_out_ready = 0
        self.commands_payload = self.data_in_payload = 0
        self._next_cycle()

    def step(self, commands_ready, data_in_ready, data_out_valid, data_out_payload, executed,
             busy):
        """Account for the values sampled at one rising edge; set what to drive next.

        Returns
        -------
        bool
            True when the run is done (every valid and the ready are now low).

        Raises
        ------
        RunTimeout
            If no stream transferred for more than ``max_idle_cycles`` cycles.
        """
        progressed = False
        if self.commands_valid and commands_ready:
            self.commands_valid = 0
            self.commands_taken += 1
            progressed = True
        if self.data_in_valid and data_in_ready:
            self.data_in_valid = 0
            self.data_in_taken += 1
            progressed = True
        if self.data_out_ready and data_out_valid:
            self.data_out.append(data_out_payload)
            progressed = True
        if self.needs_status and executed == self._target and not busy and not data_out_valid:
            self.commands_valid = self.data_in_valid = self.data_out_ready = 0
            return True
        if progressed:
            self.idle_cycles = 0
        else:
            self.idle_cycles += 1
            if self.idle_cycles > self.max_idle_cycles:
                raise RunTimeout(
                    f"the chip made no progress for {self.idle_cycles} cycles: "
                    f"{self.commands_taken} of {len(self._commands)} commands taken, "
                    f"{self.data_in_taken} of {len(self._data_in)} data-in beats taken, "
                    f"{len(self.data_out)} data-out beats received")
        self.needs_status = self.commands_taken == len(self._commands)
        self._next_cycle()
        return False

    def _next_cycle(self):
        command_pauses, data_in_pauses, data_out_pauses = self._pauses
        pause = command_pauses is not None and next(command_pauses, False)
        if not self.commands_valid and not pause and self.commands_taken < len(self._commands):
            self.commands_payload = self._commands[self.commands_taken]
            self.commands_valid = 1
        pause = data_in_pauses is not None and next(data_in_pauses, False)
        if not self.data_in_valid and not pause and self.data_in_taken < len(self._data_in):
            self.data_in_payload = self._data_in[self.data_in_taken]
            self.data_in_valid = 1
        self.data_out_ready = 0 if data_out_pauses is not None and next(data_out_pauses, False) \
            else 1

    def partial_result(self, config, status):
        """What the run produced so far, for a :class:`RunTimeout`: the data-out beats
        received, the chip's ``status`` now and the data-in bytes taken."""
        return RunResult(data_out=from_beats(config, self.data_out), status=status,
                         data_in_used=self.data_in_taken * config.data_bytes)

    def stop(self):
        """Drive every valid and the ready low (after an error, so nothing stays offered)."""
        self.commands_valid = self.data_in_valid = self.data_out_ready = 0
