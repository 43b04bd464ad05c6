"""Pruning-aware lowering: all-zero weight tiles are neither loaded nor multiplied."""

import warnings

import numpy as np
import pytest
from npu_builders import CONFIGS, SHAPES, random_input, random_layer

import driver
from driver.lowering import lower, lower_matmul, model_cycles
from hw.isa import LoadWeight, Matmul


def run_golden(net, x, config=None):
    with driver.open("golden", config=config) as npu:
        y = npu.run(net, x)
        return y, npu.stats


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_unpruned_layers_lower_identically(config):
    """A layer without an all-zero tile: the same command words and cycles either way."""
    rng = np.random.default_rng(0)
    for batch, k, n in SHAPES:
        layer = random_layer(rng, k, n, weight_dtype="uint8" if k % 2 else "int8")
        weight = np.ascontiguousarray(layer.weight.T)
        args = dict(batch=batch, config=config, act_signed=False, records=layer.records)
        skipping = lower_matmul(weight, skip_zero_tiles=True, **args)
        if skipping.skipped:     # a 1x1 layer may hold a zero weight by chance
            continue
        dense = lower_matmul(weight, **args)
        assert skipping.commands == dense.commands
        assert model_cycles(skipping.instructions, config) == model_cycles(dense.instructions,
                                                                           config)


def zeroed(layer, blocks, config):
    """``layer`` with the weight tiles ``(k tile, n tile)`` set to their zero points."""
    weight = layer.weight.copy()
    for i, j in blocks:
        rows = slice(j * config.cols, (j + 1) * config.cols)
        cols = slice(i * config.rows, (i + 1) * config.rows)
        weight[rows, cols] = layer.weight_zero_point[rows, None].astype(weight.dtype)
    return driver.QuantLinear(
        weight=weight, weight_scale=layer.weight_scale, weight_zero_point=layer.weight_zero_point,
        bias=layer.bias, input_scale=layer.input.scale, input_zero_point=layer.input.zero_point,
        output_scale=layer.output.scale, output_zero_point=layer.output.zero_point,
        name="pruned")


@pytest.mark.parametrize("weight_dtype", ["int8", "uint8"])
@pytest.mark.parametrize("config", ["4x4", "shallow"])
def test_zero_tiles_skipped_exactly(weight_dtype, config):
    """Zero tiles (weights equal to their zero points), including every K tile of one
    output tile: identical outputs, fewer weight loads and matmuls, fewer cycles."""
    config = CONFIGS[config]
    rng = np.random.default_rng(1)
    layer = random_layer(rng, 4 * config.rows, 3 * config.cols, weight_dtype=weight_dtype)
    blocks = [(0, 1), (1, 1), (2, 1), (3, 1), (1, 0), (3, 2)]   # n tile 1 entirely zero
    pruned = zeroed(layer, blocks, config)
    x = random_input(rng, 23, pruned)
    y, stats = run_golden(pruned, x, config)
    np.testing.assert_array_equal(y, pruned.reference(x))
    (chip_pass,) = lower([pruned], batch=23, config=config).passes
    assert chip_pass.skipped == {(0, 1), (1, 1), (2, 1), (3, 1), (1, 0), (3, 2)} - {(0, 1)}
    dense = lower_matmul(np.ascontiguousarray(pruned.weight.T), batch=23, config=config,
                         act_signed=False, records=pruned.records, skip_zero_tiles=False)

    def count(p, kind):
        return sum(isinstance(ins, kind) for ins in p.instructions)

    blocks_m = len(chip_pass.blocks)
    assert count(dense, Matmul) - count(chip_pass, Matmul) == 5 * blocks_m
    assert count(chip_pass, LoadWeight) < count(dense, LoadWeight)
    assert stats.skipped_tiles == 5 and stats.cycles_saved > 0
    assert stats.cycles_saved == model_cycles(dense.instructions, config) - model_cycles(
        chip_pass.instructions, config)


@pytest.mark.parametrize("amount", [0.5, 0.9])
def test_torch_pruned_model(amount):
    """A model pruned by torch.nn.utils.prune (structured, by input feature) and converted
    by qnnpack: identical to PyTorch, with the cycles the zero tiles save."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils import prune
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.ao.quantization.QuantStub(), torch.nn.Linear(64, 64),
                                torch.nn.ReLU(), torch.nn.Linear(64, 10),
                                torch.ao.quantization.DeQuantStub()).eval()
    for index in (1, 3):
        prune.ln_structured(model[index], "weight", amount=amount, n=2, dim=1)
        prune.remove(model[index], "weight")
    model.qconfig = torch.ao.quantization.get_default_qconfig("qnnpack")
    x = torch.randn(300, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.ao.quantization.fuse_modules(model, [["1", "2"]])
        prepared = torch.ao.quantization.prepare(model)
        prepared(x)
        converted = torch.ao.quantization.convert(prepared)
        framework = converted(x).numpy()
    net = driver.from_torch(converted)
    x_q = net.quantize(x.numpy())
    y, stats = run_golden(net, x_q, CONFIGS["4x4"])
    np.testing.assert_array_equal(net.dequantize(y), framework)
    zero_columns = sum(int((layer.weight == 0).all(axis=0).sum()) for layer in net.layers)
    assert zero_columns >= int(amount * 64) + int(amount * 64) - 1
    print(f"\npruned {amount:.0%}: {stats.skipped_tiles} zero tiles skipped, "
          f"{stats.cycles_saved:,} of {stats.cycles + stats.cycles_saved:,} cycles saved")
    if amount == 0.9:
        assert stats.skipped_tiles > 0 and stats.cycles_saved > 0
