"""The self-test's program: a small quantized GEMM lowered by the driver, and the bytes the
golden model says the chip sends back."""

from dataclasses import dataclass

import numpy as np

from driver.lowering import lower_matmul
from hw.config import check_config
from sim.golden import GoldenNpu
from sim.programs import random_params

__all__ = ["SelfTestProgram", "self_test_program"]


@dataclass(frozen=True)
class SelfTestProgram:
    """What :class:`hw.self_test.SelfTest` replays and expects.

    Attributes
    ----------
    gemm : tuple of int
        ``(M, K, N)`` of the matrix multiply.
    commands : tuple of int
        Command words (the driver's lowering).
    data_in : bytes
        The data-in stream: activations, weights, requantization records.
    expected : bytes
        The data-out stream of the golden model: requantized rows, the status record.
    """

    gemm: tuple
    commands: tuple
    data_in: bytes
    expected: bytes

    def describe(self):
        m, k, n = self.gemm
        return (f"{m}x{k}x{n} requantized GEMM: {len(self.commands)} commands, "
                f"{len(self.data_in)} data-in bytes, {len(self.expected)} expected bytes")


def self_test_program(config, *, seed=0):
    """A GEMM with two K tiles and two N tiles on ``config`` (so it accumulates, switches
    parameter sets and tiles), ``2 * rows + 1`` rows, random uint8 activations, int8
    weights and requantization records, lowered by :func:`driver.lowering.lower_matmul`
    and run on the golden model.

    Raises
    ------
    RuntimeError
        If the golden model reports an error for the program (it would not test the chip).
    """
    check_config(config)
    rng = np.random.default_rng(seed)
    m, k, n = 2 * config.rows + 1, 2 * config.rows, 2 * config.cols
    activations = rng.integers(0, 256, (m, k), dtype=np.uint8)
    weight = rng.integers(-128, 128, (k, n)).astype(np.int8)
    chip_pass = lower_matmul(weight, batch=m, config=config, act_signed=False,
                             records=random_params(rng, n), name="self-test")
    data_in = chip_pass.data_in(activations)
    golden = GoldenNpu(config).run(chip_pass.commands, data_in)
    if golden.status.error:
        raise RuntimeError(f"the self-test program fails on the golden model: {golden.status}")
    return SelfTestProgram(gemm=(m, k, n), commands=tuple(chip_pass.commands),
                           data_in=bytes(data_in), expected=bytes(golden.data_out))
