"""The device: running layers through a backend, status errors, statistics."""

import numpy as np
import pytest
from npu_builders import chain_of, random_input, random_layer

import driver
from driver.backends.base import Backend
from driver.backends.golden import GoldenBackend
from hw import isa
from hw.config import NpuConfig
from sim.golden import GoldenNpu
from sim.run_result import RunResult


class MismatchedChip(GoldenBackend):
    """Claims an 8x8 array but is 4x4 inside, so 8-row tiles raise OVERSIZE."""

    def __init__(self):
        super().__init__(config=NpuConfig())
        self.model = GoldenNpu(NpuConfig(rows=4, cols=4))


class ShortChip(GoldenBackend):
    """Drops the first byte the chip sends."""

    def execute(self, commands, data_in=b""):
        result = super().execute(commands, data_in)
        return RunResult(data_out=result.data_out[1:], status=result.status)


class CountingChip(GoldenBackend):
    def execute(self, commands, data_in=b""):
        result = super().execute(commands, data_in)
        return RunResult(data_out=result.data_out, status=result.status, cycles=1000,
                         cycles_measured=True)


def test_run_layer_chain_and_network():
    rng = np.random.default_rng(0)
    layers = chain_of(rng, [12, 9, 4], activation="relu")
    x = random_input(rng, 5, layers[0])
    expected = layers[1].reference(layers[0].reference(x))
    with driver.open("golden") as npu:
        np.testing.assert_array_equal(npu.run(layers, x), expected)
        np.testing.assert_array_equal(npu.run(driver.Network(layers=layers), x), expected)
        np.testing.assert_array_equal(npu.run(layers, x, rows_per_call=2), expected)
        np.testing.assert_array_equal(npu.run(layers, x[0]), expected[0])
        assert npu.stats.layers == 2 and npu.stats.macs == 12 * 9 + 9 * 4


def test_progress_reports_every_call():
    layers = chain_of(np.random.default_rng(1), [5, 4, 3])
    calls = []
    with driver.open("golden") as npu:
        npu.run(layers, random_input(np.random.default_rng(2), 7, layers[0]), rows_per_call=3,
                progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 6) for i in range(1, 7)]


def test_cycles_sum_over_calls():
    layer = random_layer(np.random.default_rng(3), 4, 4)
    x = random_input(np.random.default_rng(3), 6, layer)
    with driver.open("golden") as npu:
        npu.run(layer, x)
        whole = npu.stats.cycles
        npu.run(layer, x, rows_per_call=2)
        if whole is None:       # a backend without a clock: nothing to add up
            assert npu.stats.cycles is None and npu.stats.utilization is None
        else:
            assert npu.stats.calls == 3 and npu.stats.cycles > whole
            assert 0 < npu.stats.utilization <= 1


def test_utilization_from_backend_cycles():
    layer = random_layer(np.random.default_rng(4), 8, 8)
    npu = driver.Device(CountingChip())
    npu.run(layer, random_input(np.random.default_rng(4), 10, layer))
    assert npu.stats.cycles == 1000 and npu.stats.utilization == pytest.approx(640 / 64000)


def test_chip_error_wrong():
    layer = random_layer(np.random.default_rng(5), 8, 8, name="fc9")
    x = random_input(np.random.default_rng(5), 3, layer)
    npu = driver.Device(MismatchedChip())
    with pytest.raises(driver.NpuError, match="fc9: the chip raised OVERSIZE "
                                              r"\(a dimension exceeds the array\)") as info:
        npu.run(layer, x)
    assert info.value.code == driver.device.ErrorCode.OVERSIZE and info.value.layer == "fc9"
    # The error was cleared: a layer that fits the 4x4 chip runs afterwards.
    small = random_layer(np.random.default_rng(6), 4, 4)
    xs = random_input(np.random.default_rng(6), 2, small)
    np.testing.assert_array_equal(npu.run(small, xs), small.reference(xs))


class LossyChip(GoldenBackend):
    """Loses the last data-in beat of its first call, as a broken link would."""

    calls = 0

    def execute(self, commands, data_in=b""):
        self.calls += 1
        if self.calls == 1:
            data_in = data_in[:-self.config.data_bytes]
        return super().execute(commands, data_in)


def test_timeout_resets_the_device():
    layer = random_layer(np.random.default_rng(8), 6, 5, name="fc2")
    x = random_input(np.random.default_rng(8), 3, layer)
    npu = driver.Device(LossyChip())
    with pytest.raises(driver.NpuError, match=r"^fc2: the chip made no progress \(the chip "
                                              r"waits for data-in: .*\); it was reset$"):
        npu.run(layer, x)
    assert npu.backend.stalled is None
    np.testing.assert_array_equal(npu.run(layer, x), layer.reference(x))


def test_reset_recovers_a_waiting_chip():
    layer = random_layer(np.random.default_rng(10), 4, 4)
    x = random_input(np.random.default_rng(10), 2, layer)
    npu = driver.open("golden")
    with pytest.raises(TimeoutError):
        npu.backend.execute([isa.LoadAct(count=1, length=1).encode()], b"")
    with pytest.raises(RuntimeError, match=r"reset\(\) it first$"):
        npu.run(layer, x)
    npu.reset()
    np.testing.assert_array_equal(npu.run(layer, x), layer.reference(x))


def test_short_data_out_wrong():
    layer = random_layer(np.random.default_rng(7), 3, 3, name="fc1")
    npu = driver.Device(ShortChip())
    with pytest.raises(driver.NpuError, match="fc1: the chip sent .* the program expects"):
        npu.run(layer, random_input(np.random.default_rng(7), 2, layer))


def test_input_dtype_wrong():
    layer = random_layer(np.random.default_rng(8), 3, 3, name="fc1")
    with driver.open("golden") as npu, pytest.raises(TypeError, match="fc1 takes uint8 input"):
        npu.run(layer, np.zeros((1, 3), dtype=np.float32))


def test_input_shape_wrong():
    layer = random_layer(np.random.default_rng(8), 3, 3, name="fc1")
    with driver.open("golden") as npu, pytest.raises(ValueError, match=r"input \[batch, 3\]"):
        npu.run(layer, np.zeros((2, 4), dtype=np.uint8))


def test_unknown_backend_wrong():
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        driver.open("gpu")


def test_unavailable_backend_says_why():
    reasons = driver.available_backends()
    assert reasons["golden"] is None
    for name, reason in reasons.items():
        if reason is not None:
            with pytest.raises(driver.BackendUnavailable, match=name):
                driver.open(name)


def test_backend_never_sees_layers():
    seen = []

    class Recorder(Backend):
        name = "recorder"

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = GoldenNpu(self.config)

        def execute(self, commands, data_in=b""):
            seen.append((type(commands), type(data_in)))
            result = self.inner.run(commands, data_in)
            return RunResult(data_out=result.data_out, status=result.status)

    layer = random_layer(np.random.default_rng(9), 5, 5)
    x = random_input(np.random.default_rng(9), 2, layer)
    np.testing.assert_array_equal(driver.Device(Recorder()).run(layer, x), layer.reference(x))
    assert seen == [(list, bytes)]
