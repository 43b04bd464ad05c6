"""The npu command line and the digits example."""

import numpy as np
import pytest
from npu_builders import ONNXRUNTIME_EXACT_INT8, ort_run, qoperator_model, random_layer

from driver.cli import main

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture
def float_model(tmp_path):
    """A QuantizeLinear -> QGemm -> DequantizeLinear model with float input and output."""
    from onnx import TensorProto, helper
    layer = random_layer(np.random.default_rng(0), 10, 7, weight_range=ONNXRUNTIME_EXACT_INT8)
    inner = qoperator_model(layer)
    graph = inner.graph
    gemm = graph.node[0]
    gemm.input[0], gemm.output[0] = "xq", "yq"
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]), gemm,
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    model = helper.make_model(
        helper.make_graph(nodes, "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 7])],
                          list(graph.initializer)),
        opset_imports=list(inner.opset_import))
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path, model


def test_run_reproduces_onnxruntime(float_model, tmp_path, capsys):
    path, model = float_model
    x = np.random.default_rng(1).normal(size=(300, 10)).astype(np.float32) * 4
    np.save(tmp_path / "x.npy", x)
    status = main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--output",
                   str(tmp_path / "y.npy"), "--config", "rows=4,cols=4", "--rows-per-call", "64"])
    assert status == 0
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.float32 and y.shape == (300, 7)
    np.testing.assert_array_equal(y, ort_run(model, x))
    summary = capsys.readouterr().err
    assert "MACs" in summary and f"{300 * 10 * 7:,}" in summary and "utilization" in summary


def test_disasm_prints_commands(float_model, capsys):
    assert main(["disasm", str(float_model[0]), "--batch", "3"]) == 0
    text = capsys.readouterr().out
    assert "pass 1" in text and "LOAD_WEIGHT" in text and "STORE" in text


def test_info_lists_backends(capsys):
    assert main(["info", "--config", "rows=2,cols=3"]) == 0
    text = capsys.readouterr().out
    for name in ("golden", "verilator", "icarus", "amaranth", "rows", "cols"):
        assert name in text


def test_backend_wrong(float_model, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 10), dtype=np.float32))
    status = main(["run", str(float_model[0]), "--input", str(tmp_path / "x.npy"),
                   "--output", str(tmp_path / "y.npy"), "--backend", "tpu"])
    assert status == 1 and "unknown backend 'tpu'" in capsys.readouterr().err


def test_input_shape_wrong(float_model, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 10), dtype=np.float32))
    status = main(["run", str(float_model[0]), "--input", str(tmp_path / "x.npy"),
                   "--output", str(tmp_path / "y.npy"), "--quiet"])
    assert status == 1 and "must be [batch, 10], not shape [2, 3, 10]" in capsys.readouterr().err


def suite_model(tmp_path, op, ndim=2, dtype=np.uint8):
    from npu_builders import onnx_node_cases
    name, model, x, expected = next(c for c in onnx_node_cases(op)
                                    if c[2].ndim == ndim and c[2].dtype == dtype)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path, model, x, expected


@pytest.mark.parametrize("op, dtype", [("QLinearMatMul", np.uint8), ("QLinearMatMul", np.int8),
                                       ("MatMulInteger", np.uint8), ("QLinearConv", np.uint8)])
def test_integer_model_runs_on_integers(tmp_path, capsys, op, dtype):
    """A model whose input and output are integer tensors takes and writes them as they
    are, identical to onnxruntime (the onnx package's own QLinearMatMul 2-D test model)."""
    path, model, x, expected = suite_model(tmp_path, op, x_ndim(op), dtype)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--output",
                 str(tmp_path / "y.npy")]) == 0
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == expected.dtype and y.shape == expected.shape
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(y, ort_run(model, x))
    assert "on the chip" in capsys.readouterr().err


def x_ndim(op):
    return 4 if "Conv" in op else 2


def test_integer_input_wrong(tmp_path, capsys):
    path, model, x, expected = suite_model(tmp_path, "QLinearMatMul")
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    args = ["run", str(path), "--input", str(tmp_path / "x.npy"), "--output",
            str(tmp_path / "y.npy"), "--quiet"]
    assert main(args) == 1
    assert "takes uint8 input [2, 4]" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", x[:, :3])
    assert main(args) == 1
    assert "must be [2, 4], not shape [2, 3]" in capsys.readouterr().err


def test_config_wrong(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "--config", "depth=3"])
    assert exit_info.value.code == 2
    assert "configuration item 'depth=3' must be name=value" in capsys.readouterr().err


def test_digits_example_on_golden():
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    from examples.digits.run import main as digits
    lines = []
    result = digits("golden", echo=lines.append)
    assert result["images"] == 1797
    assert result["torch_equal"] == result["onnx_equal"] == 1797
    assert result["chip_torch"] == result["torch_int8"] > 0.9
    assert result["chip_onnx"] == result["onnx_int8"] > 0.9
    assert abs(result["float"] - result["torch_int8"]) < 0.03
    assert any("identical to PyTorch on 1797/1797" in line for line in lines)


def test_digits_cnn_example_on_golden():
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    from examples.digits_cnn.run import main as digits_cnn
    lines = []
    result = digits_cnn("golden", echo=lines.append, epochs=120)
    assert result["images"] == 1797
    assert result["torch_equal"] == result["onnx_equal"] == 1797
    assert result["chip_torch"] == result["torch_int8"] > 0.9
    assert result["chip_onnx"] == result["onnx_int8"] > 0.9
    assert any("host: MaxPool2d" in line for line in lines)
    assert any("chip: QuantConv2d" in line for line in lines)
    dense = result["torch_stats"].cycles
    for amount, figures in result["pruned"].items():
        assert figures["torch_equal"] == 1797, amount
        stats = figures["stats"]
        assert stats.cycles + stats.cycles_saved == dense
    saved = {amount: p["stats"].cycles_saved for amount, p in result["pruned"].items()}
    assert saved[0.9] > saved[0.5] > 0


def test_trace_option_reaches_the_backend(float_model, tmp_path, monkeypatch):
    import driver
    opened = []
    real_open = driver.open

    def recording_open(name, config=None, **options):
        opened.append((name, options))
        return real_open("golden", config=config)

    monkeypatch.setattr(driver, "open", recording_open)
    np.save(tmp_path / "x.npy", np.zeros((2, 10), dtype=np.float32))
    status = main(["run", str(float_model[0]), "--input", str(tmp_path / "x.npy"), "--output",
                   str(tmp_path / "y.npy"), "--backend", "verilator", "--trace",
                   str(tmp_path / "run.fst"), "--quiet"])
    assert status == 0
    assert opened == [("verilator", {"trace": str(tmp_path / "run.fst")})]


def test_output_written_under_the_name_given(float_model, tmp_path):
    """numpy.save adds ".npy" to a name without it; npu writes the file it was told to."""
    np.save(tmp_path / "x.npy", np.zeros((2, 10), dtype=np.float32))
    assert main(["run", str(float_model[0]), "--input", str(tmp_path / "x.npy"), "--output",
                 str(tmp_path / "y.out"), "--quiet"]) == 0
    assert not (tmp_path / "y.out.npy").exists()
    assert np.load(tmp_path / "y.out").shape == (2, 7)


def test_internal_error_is_one_line_unless_asked(monkeypatch, capsys):
    import driver.cli as cli

    def broken(args, console):
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(cli, "_cmd_info", broken)
    monkeypatch.delenv(cli.TRACEBACK_VARIABLE, raising=False)
    assert main(["info"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "internal error" in err and "RuntimeError: a bug" in err
    assert f"{cli.TRACEBACK_VARIABLE}=1" in err
    monkeypatch.setenv(cli.TRACEBACK_VARIABLE, "1")
    with pytest.raises(RuntimeError, match="a bug"):
        main(["info"])
