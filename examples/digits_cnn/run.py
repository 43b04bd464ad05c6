"""A small CNN on handwritten digits, on the simulated chip.

Trains a two-convolution CNN on scikit-learn's bundled 8x8 digits (no download),
quantizes it with PyTorch (qnnpack, eager mode) and, exported to ONNX, with
onnxruntime, and runs all 1797 images through the chip for both: every output byte
is compared with the framework's.  The convolutions run on the chip as matrix
multiplies of im2col patches the host cuts; max pooling runs on the host.  Then the
same CNN, pruned with ``torch.nn.utils.prune`` (50 % and 90 % of the input channels
of the second convolution and the Linear layer) and fine-tuned, shows the cycles the
chip saves by skipping all-zero weight tiles.

Run from the repository root::

    python -m examples.digits_cnn.run --backend verilator
"""

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import driver
from driver.layers import HOST_LAYERS
from examples.digits.run import load_data
from hw.generate import config_argument

__all__ = ["main", "train", "quantize_torch", "export_onnx", "prune_model"]


def _model():
    import torch

    class CNN(torch.nn.Module):
        """1x8x8 -> conv 8x3x3 -> ReLU -> pool -> conv 16x3x3 -> ReLU -> pool -> Linear 10."""

        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.conv1, self.relu1 = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU()
            self.conv2, self.relu2 = torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU()
            self.pool = torch.nn.MaxPool2d(2)
            self.flatten = torch.nn.Flatten()
            self.fc = torch.nn.Linear(16 * 2 * 2, 10)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.pool(self.relu1(self.conv1(self.quant(x))))
            x = self.pool(self.relu2(self.conv2(x)))
            return self.dequant(self.fc(self.flatten(x)))

    return CNN()


def train(x, y, *, model=None, epochs=200, seed=0):
    """A float CNN trained on ``x`` [N, 1, 8, 8], ``y`` (full-batch Adam), or ``model``
    trained further (pruning masks stay applied)."""
    import torch
    torch.manual_seed(seed)
    model = model or _model()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        optimizer.step()
    return model.eval()


def prune_model(model, amount, x, y, *, epochs=150):
    """``model`` pruned by input channel (L2 norm) in ``conv2`` and ``fc``, fine-tuned."""
    import copy

    from torch.nn.utils import prune
    pruned = copy.deepcopy(model)
    for layer in (pruned.conv2, pruned.fc):
        prune.ln_structured(layer, "weight", amount=amount, n=2, dim=1)
    train(x, y, model=pruned, epochs=epochs)
    for layer in (pruned.conv2, pruned.fc):
        prune.remove(layer, "weight")
    return pruned.eval()


def quantize_torch(model, calibration):
    """Static int8 quantization with PyTorch's eager mode and the qnnpack engine."""
    import copy

    import torch
    torch.backends.quantized.engine = "qnnpack"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = copy.deepcopy(model).eval()
        q.qconfig = torch.ao.quantization.get_default_qconfig("qnnpack")
        q = torch.ao.quantization.fuse_modules(q, [["conv1", "relu1"], ["conv2", "relu2"]])
        prepared = torch.ao.quantization.prepare(q)
        prepared(torch.from_numpy(calibration))
        return torch.ao.quantization.convert(prepared)


def export_onnx(model, calibration, folder):
    """The float CNN exported by PyTorch, quantized by onnxruntime (QOperator, uint8)."""
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

    class Plain(torch.nn.Module):      # the float model without the quantization stubs
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            m = self.inner
            x = m.pool(m.relu1(m.conv1(x)))
            return m.fc(m.flatten(m.pool(m.relu2(m.conv2(x)))))

    float_path, int8_path = Path(folder) / "cnn.onnx", Path(folder) / "cnn_int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Plain().eval(), (torch.from_numpy(calibration[:1]),), str(float_path),
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR
    try:
        quantize_static(str(float_path), str(int8_path), Reader(),
                        quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QUInt8, per_channel=True)
    finally:
        root.setLevel(level)
    return int8_path


def _torch_int8(quantized, x):
    """The quantized model's own uint8 output (before its DeQuantStub)."""
    import torch
    m = quantized
    with warnings.catch_warnings():
        warnings.simplefilter("ignore"), torch.no_grad()
        h = m.pool(m.conv1(m.quant(torch.from_numpy(x))))
        return m.fc(m.flatten(m.pool(m.conv2(h)))).int_repr().numpy()


def _run_on_chip(npu, network, x_q, label, echo):
    started = time.perf_counter()
    y_q = npu.run(network, x_q, rows_per_call=len(x_q))
    stats = npu.stats
    echo(f"  {label}: {time.perf_counter() - started:.1f} s on the {npu.name} backend, "
         f"{stats.macs:,} MACs, cycles "
         + ("n/a" if stats.cycles is None else f"{stats.cycles:,}")
         + ", utilization "
         + ("n/a" if stats.utilization is None else f"{100 * stats.utilization:.1f} %")
         + (f" of the dense MACs; {stats.skipped_tiles} zero tiles skipped, saving "
            f"{stats.cycles_saved:,} cycles" if stats.skipped_tiles else ""))
    return y_q, stats


def main(backend="verilator", *, config=None, echo=print, folder=None, prune=(0.5, 0.9),
         epochs=200):
    """Train, quantize and run the digits CNN on ``backend``; return the figures.

    Returns
    -------
    dict
        Accuracies (``float``, ``torch_int8``, ``chip_torch``, ``onnx_int8``, ``chip_onnx``),
        images where the chip equals the framework (``torch_equal``, ``onnx_equal``), the
        number of images, the chip statistics of both runs, and per pruning amount
        (``pruned``) its accuracy, images equal to PyTorch and statistics.
    """
    import onnx
    import onnxruntime
    import torch

    x, y = load_data()
    x = x.reshape(-1, 1, 8, 8)
    rng = np.random.default_rng(0)
    train_rows = rng.permutation(len(x))[:1200]
    model = train(x[train_rows], y[train_rows], epochs=epochs)
    with torch.no_grad():
        float_accuracy = float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())

    calibration = x[train_rows]
    quantized = quantize_torch(model, calibration)
    torch_q = _torch_int8(quantized, x)
    network = driver.from_torch(quantized, input_shape=(1, 8, 8), name="digits CNN (PyTorch)")

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, calibration, folder or tmp)
        onnx_model = onnx.load(str(onnx_path))
        onnx_network = driver.load_onnx(onnx_model, name="digits CNN (ONNX)")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    ort_out = session.run(None, {"x": x})[0]

    flat = x.reshape(len(x), -1)
    echo(f"digits CNN: {len(x)} images, chip {config or driver.NpuConfig()}")
    for layer in network.layers:
        echo(f"  {'host' if isinstance(layer, HOST_LAYERS) else 'chip'}: {layer!r}")
    with driver.open(backend, config=config) as npu:
        chip_torch, torch_stats = _run_on_chip(npu, network, network.quantize(flat),
                                               "PyTorch model", echo)
        chip_onnx, onnx_stats = _run_on_chip(npu, onnx_network, onnx_network.quantize(flat),
                                             "ONNX model", echo)
        pruned = {}
        for amount in prune:
            sparse = quantize_torch(prune_model(model, amount, x[train_rows], y[train_rows],
                                                epochs=epochs * 3 // 4), calibration)
            sparse_net = driver.from_torch(sparse, input_shape=(1, 8, 8))
            chip_sparse, stats = _run_on_chip(npu, sparse_net, sparse_net.quantize(flat),
                                              f"pruned {amount:.0%}", echo)
            pruned[amount] = {
                "accuracy": float((chip_sparse.argmax(1) == y).mean()),
                "torch_equal": int((chip_sparse == _torch_int8(sparse, x)).all(axis=1).sum()),
                "stats": stats}
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
        "pruned": pruned,
    }
    percent = {key: f"{100 * result[key]:.1f} %" for key in
               ("float", "torch_int8", "chip_torch", "onnx_int8", "chip_onnx")}
    echo(f"  accuracy: float {percent['float']}, PyTorch int8 {percent['torch_int8']}, "
         f"chip {percent['chip_torch']}; onnxruntime int8 {percent['onnx_int8']}, "
         f"chip {percent['chip_onnx']}")
    echo(f"  chip output identical to PyTorch on {result['torch_equal']}/{len(x)} images, "
         f"to onnxruntime on {result['onnx_equal']}/{len(x)} images")
    for amount, figures in pruned.items():
        stats = figures["stats"]
        dense = (stats.cycles or 0) + stats.cycles_saved
        echo(f"  pruned {amount:.0%}: accuracy {100 * figures['accuracy']:.1f} %, identical to "
             f"PyTorch on {figures['torch_equal']}/{len(x)} images, "
             f"{stats.cycles_saved:,} of {dense:,} cycles saved "
             f"({100 * stats.cycles_saved / max(dense, 1):.1f} %)")
    return result


def _cli():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="verilator",
                        help="golden, verilator, icarus or amaranth (default: verilator)")
    config_argument(parser)
    args = parser.parse_args()
    result = main(args.backend, config=args.config)
    equal = (result["torch_equal"] == result["onnx_equal"] == result["images"]
             and all(p["torch_equal"] == result["images"] for p in result["pruned"].values()))
    raise SystemExit(0 if equal else 1)


if __name__ == "__main__":
    _cli()
