"""The compiled Verilator chip of a test module's ``CONFIG``, shared by its tests."""

import pytest

from sim.compiled_harness import CompiledSimulation, compiled_problem


@pytest.fixture(scope="module")
def simulation(request):
    """``CompiledSimulation(config=<module>.CONFIG)``, built once per module; a missing
    compiler fails the test (``make test`` installs it)."""
    problem = compiled_problem()
    if problem:
        pytest.fail(f"the compiled Verilator harness is required: {problem}")
    return CompiledSimulation(config=request.module.CONFIG).build()
