"""Lowering: tiles of any shape on any configuration, bit-exact on the golden backend."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from npu_builders import CONFIGS, SHAPES, chain_of, random_input, random_layer

import driver
from driver.lowering import ActivationBlock, ChipPass, lower_matmul, tile_plan
from hw import isa
from hw.config import NpuConfig
from sim.golden import GoldenNpu


def run_golden(layers, x, config):
    with driver.open("golden", config=config) as npu:
        return npu.run(layers, x)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{k}x{n}" for m, k, n in SHAPES])
def test_layer_shapes_on_golden(config, shape):
    batch, k, n = shape
    rng = np.random.default_rng(batch * 7919 + k * 31 + n)
    layer = random_layer(rng, k, n, activation="relu")
    x = random_input(rng, batch, layer)
    np.testing.assert_array_equal(run_golden(layer, x, config), layer.reference(x))


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("types", [("uint8", "uint8", "uint8"), ("int8", "int8", "int8"),
                                   ("uint8", "int8", "int8"), ("int8", "uint8", "uint8")])
def test_type_combinations_on_golden(config, types):
    input_dtype, weight_dtype, output_dtype = types
    rng = np.random.default_rng(len(input_dtype) + 3 * len(weight_dtype))
    layer = random_layer(rng, 23, 19, input_dtype=input_dtype, weight_dtype=weight_dtype,
                         output_dtype=output_dtype)
    x = random_input(rng, 13, layer)
    np.testing.assert_array_equal(run_golden(layer, x, config), layer.reference(x))


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_chain_on_golden(config):
    rng = np.random.default_rng(5)
    layers = chain_of(rng, [29, 17, 23, 5], activation="relu")
    x = random_input(rng, 11, layers[0])
    expected = x
    for layer in layers:
        expected = layer.reference(expected)
    np.testing.assert_array_equal(run_golden(layers, x, config), expected)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 40), k=st.integers(1, 70), n=st.integers(1, 40),
       rows=st.integers(1, 5), cols=st.integers(1, 5), act_depth=st.integers(1, 20),
       acc_depth=st.integers(1, 12), weight_tiles=st.integers(1, 3),
       data_bytes=st.sampled_from([1, 2, 4, 8]), seed=st.integers(0, 2 ** 32 - 1))
def test_random_tiling_on_golden(batch, k, n, rows, cols, act_depth, acc_depth, weight_tiles,
                                 data_bytes, seed):
    config = NpuConfig(rows=rows, cols=cols, act_depth=act_depth, acc_depth=acc_depth,
                       weight_tiles=weight_tiles, data_bytes=data_bytes)
    rng = np.random.default_rng(seed)
    layer = random_layer(rng, k, n, weight_dtype="uint8")
    x = random_input(rng, batch, layer)
    np.testing.assert_array_equal(run_golden(layer, x, config), layer.reference(x))


def test_program_streams_are_consistent():
    config = CONFIGS["shallow"]
    rng = np.random.default_rng(1)
    layer = random_layer(rng, 21, 9)
    x = random_input(rng, 8, layer)
    program = driver.lower([layer], batch=8, config=config)
    (chip_pass,) = program.passes
    assert isinstance(chip_pass, ChipPass)
    data = chip_pass.data_in(x)
    assert len(data) == sum(ins.data_in_bytes(config) for ins in chip_pass.instructions)
    assert len(data) % config.data_bytes == 0
    for word, ins in zip(program.commands, chip_pass.instructions, strict=False):
        assert isa.decode(word) == ins
    assert chip_pass.instructions[-1] == isa.ReadStatus()
    # Every STORE's rows and columns are covered exactly once.
    covered = np.zeros((8, 9), dtype=int)
    for out in chip_pass.outputs:
        covered[out.m0:out.m0 + out.m, out.n0:out.n0 + out.n] += 1
    assert (covered == 1).all()
    blocks = [s for s in chip_pass.segments if isinstance(s, ActivationBlock)]
    assert {(b.k0, b.k) for b in blocks} == {(0, 4), (4, 4), (8, 4), (12, 4), (16, 4), (20, 1)}


def test_params_precede_weights_of_their_tile():
    layer = random_layer(np.random.default_rng(2), 9, 10, weight_dtype="uint8")
    program = driver.lower(layer, batch=3, config=CONFIGS["4x4"])
    loaded_columns = None
    for ins in program.passes[0].instructions:
        if isinstance(ins, isa.LoadParams):
            loaded_columns = ins.count
        if isinstance(ins, isa.LoadWeight):
            assert loaded_columns == ins.n


def test_tile_plan_keeps_weights_resident_when_they_fit():
    config = NpuConfig(rows=4, cols=4, act_depth=8, acc_depth=8, weight_tiles=4)
    plan = tile_plan(8, 8, 40, config)
    assert plan.resident and plan.m_block == 4 and plan.k_group == 2
    program = driver.lower(random_layer(np.random.default_rng(3), 8, 8), batch=40, config=config)
    loads = [i for i in program.passes[0].instructions if isinstance(i, isa.LoadWeight)]
    assert len(loads) == 4        # 2 K tiles x 2 N tiles, loaded once for all 10 M blocks


def test_tile_plan_groups_k_when_activations_do_not_fit():
    plan = tile_plan(100, 3, 5, NpuConfig(rows=2, cols=3, act_depth=4, acc_depth=4))
    assert plan.m_block == 4 and plan.k_group == 1 and len(plan.k_tiles) == 50


def test_disassembly_lists_every_command():
    layers = chain_of(np.random.default_rng(4), [10, 6, 3])
    program = driver.lower(layers, batch=2, config=CONFIGS["4x4"])
    text = program.disassemble()
    lines = [line for line in text.splitlines() if not line.startswith(";")]
    assert len(lines) == len(program.commands)
    assert "pass 2" in text and "MATMUL" in text and "READ_STATUS" in text
    assert all(f"{word:016x}" in line for word, line in zip(program.commands, lines, strict=False))


def test_macs_count_useful_work():
    layers = chain_of(np.random.default_rng(6), [10, 6, 3])
    assert driver.lower(layers, batch=5).macs == 5 * (10 * 6 + 6 * 3)


def test_batch_wrong():
    layer = random_layer(np.random.default_rng(0), 3, 3)
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        driver.lower(layer, batch=0)


def test_config_wrong():
    layer = random_layer(np.random.default_rng(0), 3, 3)
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        driver.lower(layer, batch=1, config={"rows": 4})


def test_data_in_shape_wrong():
    layer = random_layer(np.random.default_rng(0), 3, 3)
    chip_pass = driver.lower(layer, batch=2).passes[0]
    with pytest.raises(ValueError, match=r"lowered for input shape \(2, 3\)"):
        chip_pass.data_in(np.zeros((3, 3), dtype=np.uint8))


# -- lower_matmul: the matrix multiply underneath every layer ---------------------------------

@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("types", [(False, np.int8), (True, np.uint8)])
def test_lower_matmul_raw_is_the_integer_product(config, types):
    act_signed, weight_dtype = types
    rng = np.random.default_rng(len(str(config)))
    m, k, n = 23, 3 * config.rows + 1, 2 * config.cols + 1
    a = rng.integers(-128 if act_signed else 0, 128 if act_signed else 256, (m, k))
    w = rng.integers(0, 256, (k, n)).astype(np.uint8).view(weight_dtype)
    chip_pass = lower_matmul(w, batch=m, config=config, act_signed=act_signed)
    assert not any(isinstance(ins, isa.LoadParams) for ins in chip_pass.instructions)
    x = a.astype(np.int8 if act_signed else np.uint8)
    result = GoldenNpu(config).run(chip_pass.commands, chip_pass.data_in(x))
    assert len(result.data_out) == chip_pass.data_out_bytes
    y = chip_pass.decode(result.data_out)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, a @ w.astype(np.int64))


def test_lower_matmul_raw_with_records_subtracts_weight_zero_points():
    config = CONFIGS["shallow"]
    rng = np.random.default_rng(8)
    a = rng.integers(0, 256, (9, 7)).astype(np.uint8)
    w = rng.integers(0, 256, (7, 6)).astype(np.uint8)
    zero = rng.integers(0, 256, 6)
    records = [isa.ParamRecord(multiplier=1 << 30, shift=31, weight_zero=int(z)) for z in zero]
    chip_pass = lower_matmul(w, batch=9, config=config, act_signed=False, records=records,
                             raw=True)
    result = GoldenNpu(config).run(chip_pass.commands, chip_pass.data_in(a))
    np.testing.assert_array_equal(chip_pass.decode(result.data_out),
                                  a.astype(np.int64) @ (w.astype(np.int64) - zero))


def test_a_layer_lowers_through_lower_matmul():
    layer = random_layer(np.random.default_rng(9), 21, 9, input_dtype="int8",
                         output_dtype="int8")
    chip_pass = driver.lower(layer, batch=30, config=CONFIGS["shallow"]).passes[0]
    matmul = lower_matmul(np.ascontiguousarray(layer.weight.T), batch=30,
                          config=CONFIGS["shallow"], act_signed=True, records=layer.records,
                          output_signed=True)
    assert chip_pass.commands == matmul.commands
    assert chip_pass.output_dtype == matmul.output_dtype == np.int8
    # Identical M blocks are one object.
    assert len({id(block) for block in chip_pass.blocks}) < len(chip_pass.blocks)


def test_lower_matmul_weight_wrong():
    with pytest.raises(TypeError, match="weight must be a uint8 or int8 NumPy array"):
        lower_matmul(np.zeros((2, 2), np.int32), batch=1, act_signed=False)
    with pytest.raises(TypeError, match="weight must be a uint8 or int8 NumPy array"):
        lower_matmul([[1]], batch=1, act_signed=False)
    with pytest.raises(ValueError, match=r"weight must have shape \[K, N\]"):
        lower_matmul(np.zeros(3, np.int8), batch=1, act_signed=False)


def test_lower_matmul_batch_wrong():
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        lower_matmul(np.zeros((2, 2), np.int8), batch=0, act_signed=False)


def test_lower_matmul_records_wrong():
    w = np.zeros((2, 3), np.int8)
    with pytest.raises(TypeError, match="records must be ParamRecords"):
        lower_matmul(w, batch=1, act_signed=False, records=[1, 2, 3])
    with pytest.raises(ValueError, match="2 records for 3 columns"):
        lower_matmul(w, batch=1, act_signed=False, records=[isa.ParamRecord(shift=1)] * 2)
    with pytest.raises(ValueError, match="a requantized matmul needs one record per column"):
        lower_matmul(w, batch=1, act_signed=False, raw=False)


#: Small buffers that take the blocked schedule (K groups reloaded per pair of N tiles).
BLOCKED = NpuConfig(rows=2, cols=2, act_depth=64, weight_tiles=2, acc_depth=64, data_bytes=2)


@pytest.mark.parametrize("k, n, batch, weight_dtype, prune", [
    (10, 5, 45, "uint8", ()),      # a lone last N tile shares parameter set 0 with the next
    (9, 6, 44, "int8", ((slice(2), slice(4)),)),   # all-zero weight tiles skipped
    (12, 4, 20, "uint8", ()),      # one M block
    # The first two K groups skipped: the first group's rows (which load a tile at a time,
    # after each MATMUL) must not land in the region the third group uses.
    (12, 4, 16, "int8", ((slice(None), slice(8)),)),
], ids=["lone_last_tile", "pruned", "one_block", "first_groups_pruned"])
def test_blocked_schedule_is_exact_on_golden(k, n, batch, weight_dtype, prune):
    rng = np.random.default_rng(k * n + batch)
    layer = random_layer(rng, k, n, weight_dtype=weight_dtype)
    for out_features, in_features in prune:
        layer.weight[out_features, in_features] = 0   # int8 weights: zero point 0
    plan = tile_plan(k, n, batch, BLOCKED)
    assert plan.n_group == 2 and plan.k_group < len(plan.k_tiles)
    (chip_pass,) = driver.lower([layer], batch=batch, config=BLOCKED).passes
    assert bool(chip_pass.skipped) == bool(prune)
    x = random_input(rng, batch, layer)
    np.testing.assert_array_equal(run_golden(layer, x, BLOCKED), layer.reference(x))


def test_blocked_schedule_for_large_layers():
    config = NpuConfig()
    plan = tile_plan(512, 512, 512, config)
    assert plan.n_group == 2 and plan.m_block == 16 * config.rows
    # The classic plan keeps a 64-row block's eight K tiles and is kept when weights stay.
    assert tile_plan(16, 16, 600, NpuConfig(weight_tiles=4)).resident
    # 16-byte vectors on an 8-byte port: reloading them per N-tile pair would saturate it.
    assert tile_plan(256, 256, 256, NpuConfig(rows=16, cols=16)).n_group is None
