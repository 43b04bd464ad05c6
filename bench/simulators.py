"""Sections 2 and 4: the cycle model against the simulated RTL, and how fast each simulates."""

import time

from hw.isa import ErrorCode
from sim.golden import GoldenNpu

from .gemms import random_gemm
from .plan import DEFAULT_CONFIG, RTL_BACKENDS

__all__ = ["measure_backends", "time_golden"]

def _build_stamp(name, config):
    """When ``name``'s build for ``config`` was last made (None: never, or no build step).

    Opening a backend rebuilds only when the generated Verilog changed; comparing this
    before and after tells whether the start time includes a build.
    """
    if name not in ("verilator", "icarus"):
        return None
    from sim.rtl import RtlSimulation
    marker = RtlSimulation(config=config, simulator=name).build_dir / "built.json"
    return marker.stat().st_mtime_ns if marker.exists() else None


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
            and result.status.error == ErrorCode.NONE, "seconds": seconds}


def measure_backends(plan, rng, backends=RTL_BACKENDS, on_step=None):
    """Sections 2 and 4: each backend runs the validation GEMMs, then the speed GEMM.

    The validation runs also warm the simulator up, so the timed run measures the
    steady state.  Returns ``(validation rows, speed rows)``.
    """
    from driver.backends import BackendUnavailable, open_backend
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
            chip = open_backend(name, config=config)
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
                      "cycles_per_second": timed["measured_cycles"] / timed["seconds"]})
    return validation, speed


def time_golden(plan, rng):
    """Section 4: wall time of the golden model for one whole GEMM (program built before)."""
    commands, data_in = _program(DEFAULT_CONFIG, plan.golden, rng)
    started = time.perf_counter()
    result = GoldenNpu(DEFAULT_CONFIG).run(commands, data_in)
    seconds = time.perf_counter() - started
    return {"gemm": str(plan.golden), "commands": len(commands),
            "cycles": result.cycles, "seconds": seconds,
            "cycles_per_second": result.cycles / seconds}


