"""Sections 2 and 4: the cycle model against the simulated RTL, and how fast each simulates."""

import time

from hw.isa import ErrorCode
from sim.golden import GoldenNpu

from .gemms import random_gemm
from .plan import DEFAULT_CONFIG, RTL_BACKENDS

__all__ = ["BACKEND_OPTIONS", "measure_backends", "measure_long_runs", "time_golden"]

#: Benchmark backend name -> (driver backend, options).
BACKEND_OPTIONS = {"verilator": ("verilator", {}),
                   "verilator-cocotb": ("verilator", {"cocotb": True}),
                   "icarus": ("icarus", {}), "amaranth": ("amaranth", {})}


def _build_stamp(name, config):
    """When ``name``'s build for ``config`` was last made (None: never, or no build step).

    Opening a backend rebuilds only when its sources changed; comparing this before and
    after tells whether the start time includes a build.
    """
    if name == "verilator":
        from sim.compiled_harness import CompiledSimulation
        marker = CompiledSimulation(config=config).build_dir / "built.json"
    elif name in ("verilator-cocotb", "icarus"):
        from sim.rtl import RtlSimulation
        marker = RtlSimulation(config=config, simulator=name.partition("-")[0]).build_dir \
            / "built.json"
    else:
        return None
    return marker.stat().st_mtime_ns if marker.exists() else None


def _open(name, config):
    from driver.backends import open_backend
    backend, options = BACKEND_OPTIONS[name]
    return open_backend(backend, config=config, **options)


def _program(config, gemm, rng):
    """The command words and data-in bytes of ``gemm`` with random operands."""
    chip_pass, data_in = random_gemm(config, gemm, rng)
    return chip_pass.commands, data_in


def _run_and_check(chip, program, model):
    """Run ``program`` (commands, data-in); its cycles and bytes next to those of the golden
    ``model``, which has run everything the chip ran (the status counts commands since reset)."""
    commands, data_in = program
    expected = model.run(commands, data_in)
    started = time.perf_counter()
    result = chip.execute(commands, data_in)
    seconds = time.perf_counter() - started
    return {"measured_cycles": result.cycles, "model_cycles": expected.cycles,
            "bytes_match": result.data_out == expected.data_out
            and result.status.error == ErrorCode.NONE, "seconds": seconds,
            "macs": result.array_macs}


def _rates(timed):
    """Simulated cycles and array MACs per wall-clock second of a timed run."""
    return {"cycles_per_second": timed["measured_cycles"] / timed["seconds"],
            "macs_per_second": timed["macs"] / timed["seconds"]}


def measure_backends(plan, rng, backends=RTL_BACKENDS, on_step=None):
    """Sections 2 and 4: each backend runs the validation GEMMs, then the speed GEMM.

    The validation runs also warm the simulator up, so the timed run measures the
    steady state.  Returns ``(validation rows, speed rows)``.
    """
    from driver.backends import BackendUnavailable
    config = DEFAULT_CONFIG
    validation_programs = [(gemm, _program(config, gemm, rng)) for gemm in plan.validation]
    speed_program = _program(config, plan.speed, rng)
    validation, speed = [], []
    for name in backends:
        if on_step:
            on_step(f"{name}: build (if needed), start, {len(plan.validation) + 1} GEMMs")
        stamp = _build_stamp(name, config)
        started = time.perf_counter()
        try:
            chip = _open(name, config)
        except (BackendUnavailable, RuntimeError) as exc:  # missing tool, failed start
            speed.append({"backend": name, "available": False, "reason": str(exc)})
            continue
        with chip:
            start_seconds = time.perf_counter() - started
            cached = None if name == "amaranth" else stamp == _build_stamp(name, config)
            model = GoldenNpu(config)
            for gemm, program in validation_programs:
                validation.append({"backend": name, "gemm": str(gemm),
                                   **_run_and_check(chip, program, model)})
            timed = _run_and_check(chip, speed_program, model)
        speed.append({"backend": name, "available": True, "build_cached": cached,
                      "start_seconds": start_seconds, "gemm": str(plan.speed), **timed,
                      **_rates(timed)})
    return validation, speed


def measure_long_runs(plan, rng, on_step=None):
    """Section 4: the compiled Verilator loop (``driver.open("verilator")``) on the plan's
    long layers, one configuration each, unstalled; every byte against the golden model."""
    from driver.backends import BackendUnavailable
    rows = []
    for config, gemm in plan.long_runs:
        if on_step:
            on_step(f"verilator: {config.rows}x{config.cols} build (if needed), {gemm}")
        program = _program(config, gemm, rng)
        stamp = _build_stamp("verilator", config)
        started = time.perf_counter()
        try:
            chip = _open("verilator", config)
        except (BackendUnavailable, RuntimeError) as exc:
            rows.append({"array": f"{config.rows}x{config.cols}", "gemm": str(gemm),
                         "available": False, "reason": str(exc)})
            continue
        with chip:
            start_seconds = time.perf_counter() - started
            timed = _run_and_check(chip, program, GoldenNpu(config))
        rows.append({"array": f"{config.rows}x{config.cols}", "gemm": str(gemm),
                     "available": True, "start_seconds": start_seconds,
                     "build_cached": stamp == _build_stamp("verilator", config), **timed,
                     **_rates(timed)})
    return rows


def time_golden(plan, rng):
    """Section 4: wall time of the golden model for one whole GEMM (program built before)."""
    commands, data_in = _program(DEFAULT_CONFIG, plan.golden, rng)
    started = time.perf_counter()
    result = GoldenNpu(DEFAULT_CONFIG).run(commands, data_in)
    seconds = time.perf_counter() - started
    return {"gemm": str(plan.golden), "commands": len(commands),
            "cycles": result.cycles, "seconds": seconds,
            "cycles_per_second": result.cycles / seconds}


