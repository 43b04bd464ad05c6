"""A host link that tests the chip on its own: a program from ROM, its output checked
against ROM.

The program, its data and the bytes it must send back are constructor arguments, made
above ``hw/`` (the driver's lowering and the golden model: ``boards/self_test_program.py``),
so the gateware knows nothing of either.
"""

from amaranth import Module, Signal, unsigned
from amaranth.lib import data, enum, memory, wiring
from amaranth.lib.wiring import Out

from .config import COMMAND_WIDTH, check_config
from .host_link import HostLinkSignature

__all__ = ["SelfTest", "SelfTestFailure", "self_test_leds_layout"]


class SelfTestFailure(enum.Enum, shape=3):
    """Why a self-test failed (``NONE`` while it runs and when it passes)."""
    NONE = 0
    MISMATCH = 1        #: a data-out byte differs from the expected one
    CHIP_ERROR = 2      #: the chip latched an error code
    EXTRA_OUTPUT = 3    #: the chip sent more beats than expected
    MISSING_OUTPUT = 4  #: the chip finished every command with beats still expected
    TIMEOUT = 5         #: no stream moved for ``timeout_cycles`` cycles


def self_test_leds_layout():
    """The self-test's lights, bit 0 first: a board with two LEDs shows pass and fail."""
    return data.StructLayout({"passed": 1, "failed": 1, "running": 1})


#: Seeds of the three streams' pause generators (any non-zero 16-bit values).
_PAUSE_SEEDS = {"commands": 0xACE1, "data_in": 0x1D0F, "data_out": 0x5A5A}


def _pause(m, name, stall_every):
    """A signal that is high on about one cycle in ``stall_every`` (never for None), from
    a 16-bit Fibonacci LFSR (taps 16, 14, 13, 11: maximal length)."""
    pause = Signal(name=f"{name}_pause")
    if stall_every is None:
        return pause
    lfsr = Signal(16, init=_PAUSE_SEEDS[name], name=f"{name}_lfsr")
    feedback = lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10]
    m.d.sync += lfsr.eq((lfsr << 1) | feedback)
    m.d.comb += pause.eq(lfsr[:stall_every.bit_length() - 1] == 0)
    return pause


def _check_words(name, words, width):
    try:
        words = [int(w) for w in words]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of integers, not {words!r}") from None
    if not words:
        raise ValueError(f"{name} must not be empty")
    if any(not 0 <= w < 1 << width for w in words):
        raise ValueError(f"{name} must hold {width}-bit unsigned words")
    return words


def _beats(name, raw, config):
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes, not {raw!r}")
    raw = bytes(raw)
    width = config.data_bytes
    if len(raw) % width:
        raise ValueError(f"{name} must be whole {width}-byte beats, not {len(raw)} bytes")
    return [int.from_bytes(raw[i:i + width], "little") for i in range(0, len(raw), width)]


class SelfTest(wiring.Component):
    """Sends a program to the chip from ROM and checks every data-out beat against ROM.

    It offers the command words and the data-in beats in order, takes every data-out beat
    and compares it with the next expected one.  It passes once the chip has executed
    every command, is idle and has sent exactly the expected beats with no error; it fails
    at the first difference, chip error, extra or missing beat, or after
    ``timeout_cycles`` cycles in which no stream moved.  The outcome holds until reset.

    Parameters
    ----------
    config : NpuConfig
    commands : sequence of int
        Command words.
    data_in : bytes
        The data-in stream (whole beats).
    expected : bytes
        What the chip must send back (whole beats), e.g. from the golden model.
    stall_every : int or None
        Pause each stream on about one cycle in this many (a power of two, at least 2),
        from its own pseudo-random generator: offers wait and data-out sees
        backpressure, as in the simulator tests.  None: never pause.
    timeout_cycles : int
        Cycles without any transfer before the test fails.

    Members
    -------
    chip : Out(HostLinkSignature(config))
    leds : Out(self_test_leds_layout())
        ``passed``, ``failed``, ``running``.
    failure : Out(SelfTestFailure)
        Why it failed.
    """

    def __init__(self, *, config, commands, data_in, expected, stall_every=None,
                 timeout_cycles=1 << 16):
        check_config(config)
        self.config = config
        self.commands = _check_words("commands", commands, COMMAND_WIDTH)
        self.data_in = _beats("data_in", data_in, config)
        self.expected = _beats("expected", expected, config)
        if not self.expected:
            raise ValueError("expected must not be empty")
        if stall_every is not None and (isinstance(stall_every, bool)
                                        or not isinstance(stall_every, int)):
            raise TypeError(f"stall_every must be a power of two or None, not {stall_every!r}")
        if stall_every is not None and (stall_every < 2 or stall_every & (stall_every - 1)
                                        or stall_every > 1 << 15):
            raise ValueError(f"stall_every must be a power of two from 2 to 32768, "
                             f"not {stall_every!r}")
        if isinstance(timeout_cycles, bool) or not isinstance(timeout_cycles, int) \
                or timeout_cycles <= 0:
            raise TypeError(f"timeout_cycles must be a positive integer, "
                            f"not {timeout_cycles!r}")
        self.stall_every = stall_every
        self.timeout_cycles = timeout_cycles
        super().__init__({
            "chip": Out(HostLinkSignature(config)),
            "leds": Out(self_test_leds_layout()),
            "failure": Out(SelfTestFailure),
        })

    def _source(self, m, name, words, width, port, running):
        """Offer ROM ``words`` on stream ``port`` in order; high once all were taken."""
        m.submodules[f"{name}_rom"] = rom = memory.Memory(shape=unsigned(width),
                                                          depth=max(1, len(words)),
                                                          init=words)
        read = rom.read_port()
        index = Signal(range(len(words) + 1), name=f"{name}_index")
        primed = Signal(name=f"{name}_primed")   # the ROM word of ``index`` is on read.data
        holding = Signal(name=f"{name}_holding")  # an offer not taken yet stays up
        pause = _pause(m, name, self.stall_every)
        taken = port.valid & port.ready
        m.d.comb += [
            port.payload.eq(read.data),
            port.valid.eq(holding | (primed & (index < len(words)) & ~pause & running)),
            read.addr.eq(index + taken),
        ]
        m.d.sync += [
            primed.eq(1),
            holding.eq(port.valid & ~port.ready & running),
            index.eq(index + taken),
        ]
        return index == len(words), taken

    def elaborate(self, platform):
        m = Module()
        chip = self.chip
        running = Signal()
        failure = Signal(SelfTestFailure)
        passed = Signal()
        m.d.comb += running.eq(~passed & (failure == SelfTestFailure.NONE))

        commands_done, command_taken = self._source(m, "commands", self.commands,
                                                    COMMAND_WIDTH, chip.commands, running)
        _, data_taken = self._source(m, "data_in", self.data_in, self.config.data_width,
                                     chip.data_in, running)

        expected = len(self.expected)
        m.submodules.expected_rom = rom = memory.Memory(
            shape=unsigned(self.config.data_width), depth=expected, init=self.expected)
        read = rom.read_port()
        received = Signal(range(expected + 1))
        primed = Signal()
        pause = _pause(m, "data_out", self.stall_every)
        beat = chip.data_out.valid & chip.data_out.ready
        m.d.comb += [
            chip.data_out.ready.eq(primed & ~pause & running),
            read.addr.eq(received + (beat & (received < expected - 1))),
        ]
        m.d.sync += primed.eq(1)
        with m.If(beat):
            m.d.sync += received.eq(received + (received < expected))

        idle = Signal(range(self.timeout_cycles + 1))
        with m.If(command_taken | data_taken | beat):
            m.d.sync += idle.eq(0)
        with m.Elif(running):
            m.d.sync += idle.eq(idle + 1)

        finished = (commands_done & (chip.executed == len(self.commands)) & ~chip.busy
                    & ~chip.data_out.valid)
        with m.If(running):
            with m.If(chip.error != 0):
                m.d.sync += failure.eq(SelfTestFailure.CHIP_ERROR)
            with m.Elif(beat & (received == expected)):
                m.d.sync += failure.eq(SelfTestFailure.EXTRA_OUTPUT)
            with m.Elif(beat & (chip.data_out.payload != read.data)):
                m.d.sync += failure.eq(SelfTestFailure.MISMATCH)
            with m.Elif(finished & (received != expected)):
                m.d.sync += failure.eq(SelfTestFailure.MISSING_OUTPUT)
            with m.Elif(finished):
                m.d.sync += passed.eq(1)
            with m.Elif(idle == self.timeout_cycles):
                m.d.sync += failure.eq(SelfTestFailure.TIMEOUT)

        m.d.comb += [
            self.leds.passed.eq(passed),
            self.leds.failed.eq(failure != SelfTestFailure.NONE),
            self.leds.running.eq(running),
            self.failure.eq(failure),
        ]
        return m

