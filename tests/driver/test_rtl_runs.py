"""The same driver programs on the golden model and on the Verilog under Verilator."""

import numpy as np
import pytest
from npu_builders import chain_of, random_input

import driver
from hw.config import NpuConfig

# The configuration the backend tests build too, so one Verilator build serves both.
CONFIG = NpuConfig(rows=4, cols=4, act_depth=64, weight_tiles=2, acc_depth=32, data_bytes=4)


@pytest.fixture(scope="module")
def verilator():
    reason = driver.available_backends()["verilator"]
    if reason is not None:
        pytest.skip(reason)
    with driver.open("verilator", config=CONFIG) as npu:
        yield npu


@pytest.mark.parametrize("types", [("uint8", "uint8"), ("int8", "int8"), ("uint8", "int8")])
def test_chain_identical_on_golden_and_verilator(verilator, types):
    act, weight = types
    rng = np.random.default_rng(len(act) + len(weight))
    layers = chain_of(rng, [13, 7, 9, 3], input_dtype=act, weight_dtype=weight,
                      activation="relu")
    x = random_input(rng, 37, layers[0])
    with driver.open("golden", config=CONFIG) as golden:
        expected = golden.run(layers, x)
        model_cycles = golden.stats.cycles
    y = verilator.run(layers, x)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(y, driver.Network(layers=layers).reference(x))
    assert verilator.stats.cycles_measured and verilator.stats.macs == golden.stats.macs
    if model_cycles is not None:        # unstalled RTL runs take the cycle model's count
        assert verilator.stats.cycles == model_cycles
