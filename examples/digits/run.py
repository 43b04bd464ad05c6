"""Handwritten digits on the simulated chip.

Trains a small MLP on scikit-learn's bundled digits data set (no download), quantizes
it with PyTorch (qnnpack), exports it to ONNX and quantizes that with onnxruntime,
then runs all 1797 images through the chip for both and compares every output byte
with the framework's.

Run from the repository root::

    python -m examples.digits.run --backend verilator
"""

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import driver
from hw.generate import config_argument

__all__ = ["main", "train", "quantize_torch", "export_onnx"]

HIDDEN = 32


def load_data():
    from sklearn.datasets import load_digits
    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


def train(x, y, *, epochs=300, seed=0):
    """A float 64-32-10 MLP trained on ``x``, ``y`` (full-batch Adam)."""
    import torch
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.ReLU(),
                                torch.nn.Linear(HIDDEN, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        optimizer.step()
    return model.eval()


def quantize_torch(model, calibration):
    """Static int8 quantization with PyTorch's eager mode and the qnnpack engine."""
    import torch
    torch.backends.quantized.engine = "qnnpack"
    fc1, fc2 = model[0], model[2]

    class Quantizable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.fc1, self.relu, self.fc2 = fc1, torch.nn.ReLU(), fc2
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.fc2(self.relu(self.fc1(self.quant(x)))))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = Quantizable().eval()
        q.qconfig = torch.ao.quantization.get_default_qconfig("qnnpack")
        q = torch.ao.quantization.fuse_modules(q, [["fc1", "relu"]])
        prepared = torch.ao.quantization.prepare(q)
        prepared(torch.from_numpy(calibration))
        return torch.ao.quantization.convert(prepared)


def export_onnx(model, calibration, folder):
    """The float model exported by PyTorch, quantized by onnxruntime (QOperator, uint8)."""
    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": calibration}])

        def get_next(self):
            return next(self.batches, None)

    float_path, int8_path = Path(folder) / "digits.onnx", Path(folder) / "digits_int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(calibration[:1]),), str(float_path),
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    # The quantizer suggests shape-inference pre-processing, which a 2-layer MLP does not need.
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR
    try:
        quantize_static(str(float_path), str(int8_path), Reader(),
                        quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QUInt8, per_channel=True)
    finally:
        root.setLevel(level)
    return int8_path


def _run_on_chip(npu, network, x_q, label, echo):
    started = time.perf_counter()
    y_q = npu.run(network, x_q, rows_per_call=len(x_q))
    stats = npu.stats
    echo(f"  {label}: {time.perf_counter() - started:.1f} s on the {npu.name} backend, "
         f"{stats.macs:,} MACs, cycles "
         + ("n/a" if stats.cycles is None else f"{stats.cycles:,}")
         + ", utilization "
         + ("n/a" if stats.utilization is None else f"{100 * stats.utilization:.1f} %"))
    return y_q, stats


def main(backend="verilator", *, config=None, echo=print, folder=None):
    """Train, quantize and run the digits MLP on ``backend``; return the figures.

    Returns
    -------
    dict
        Accuracies (``float``, ``torch_int8``, ``chip_torch``, ``onnx_int8``, ``chip_onnx``),
        images where the chip equals the framework (``torch_equal``, ``onnx_equal``), the
        number of images and the chip statistics of both runs.
    """
    import onnx
    import onnxruntime
    import torch

    x, y = load_data()
    rng = np.random.default_rng(0)
    train_rows = rng.permutation(len(x))[:1200]
    model = train(x[train_rows], y[train_rows])
    with torch.no_grad():
        float_accuracy = float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())

    calibration = x[train_rows]
    quantized = quantize_torch(model, calibration)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_out = quantized.fc2(quantized.fc1(quantized.quant(torch.from_numpy(x))))
    torch_q = torch_out.int_repr().numpy()
    network = driver.from_torch(quantized, name="digits (PyTorch)")

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, calibration, folder or tmp)
        onnx_model = onnx.load(str(onnx_path))
        onnx_network = driver.load_onnx(onnx_model, name="digits (ONNX)")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    ort_out = session.run(None, {"x": x})[0]

    echo(f"digits: {len(x)} images, MLP 64-{HIDDEN}-10, chip {config or driver.NpuConfig()}")
    with driver.open(backend, config=config) as npu:
        chip_torch, torch_stats = _run_on_chip(npu, network, network.quantize(x),
                                               "PyTorch model", echo)
        chip_onnx, onnx_stats = _run_on_chip(npu, onnx_network, onnx_network.quantize(x),
                                             "ONNX model", echo)
    ort_q = onnx_network.output.quantize(ort_out)
    result = {
        "images": len(x),
        "float": float_accuracy,
        "torch_int8": float((torch_q.argmax(1) == y).mean()),
        "chip_torch": float((chip_torch.argmax(1) == y).mean()),
        "torch_equal": int((chip_torch == torch_q).all(axis=1).sum()),
        "onnx_int8": float((ort_out.argmax(1) == y).mean()),
        "chip_onnx": float((chip_onnx.argmax(1) == y).mean()),
        "onnx_equal": int((chip_onnx == ort_q).all(axis=1).sum()),
        "torch_stats": torch_stats,
        "onnx_stats": onnx_stats,
    }
    percent = {key: f"{100 * result[key]:.1f} %" for key in
               ("float", "torch_int8", "chip_torch", "onnx_int8", "chip_onnx")}
    echo(f"  accuracy: float {percent['float']}, PyTorch int8 {percent['torch_int8']}, "
         f"chip {percent['chip_torch']}; onnxruntime int8 {percent['onnx_int8']}, "
         f"chip {percent['chip_onnx']}")
    echo(f"  chip output identical to PyTorch on {result['torch_equal']}/{len(x)} images, "
         f"to onnxruntime on {result['onnx_equal']}/{len(x)} images")
    return result


def _cli():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="verilator",
                        help="golden, verilator, icarus or amaranth (default: verilator)")
    config_argument(parser)
    args = parser.parse_args()
    result = main(args.backend, config=args.config)
    equal = result["torch_equal"] == result["onnx_equal"] == result["images"]
    raise SystemExit(0 if equal else 1)


if __name__ == "__main__":
    _cli()
