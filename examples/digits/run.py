"""Handwritten digits on the simulated chip.

Trains a small MLP on scikit-learn's bundled digits data set (no download), quantizes
it with PyTorch (qnnpack), exports it to ONNX and quantizes that with onnxruntime,
then runs all 1797 images through the chip for both and compares every output byte
with the framework's.

Run from the repository root::

    python -m examples.digits.run --backend verilator
"""

import tempfile

import numpy as np

import driver
from examples import flows

__all__ = ["main", "mlp"]

HIDDEN = 32


def mlp(*, seed=0):
    """An untrained float 64-32-10 MLP between a QuantStub and a DeQuantStub."""
    import torch

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.fc1, self.relu, self.fc2 = (torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(),
                                             torch.nn.Linear(HIDDEN, 10))
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.fc2(self.relu(self.fc1(self.quant(x)))))

    torch.manual_seed(seed)
    return MLP()


def main(backend="verilator", *, config=None, echo=print, folder=None, options=None,
         images=None):
    """Train, quantize and run the digits MLP on ``backend``; return the figures.

    ``options`` go to :func:`driver.open` (``port=`` for the serial backend); ``images``
    runs only the first that many images on the chip (all 1797 by default).

    Returns
    -------
    dict
        Accuracies (``float``, ``torch_int8``, ``chip_torch``, ``onnx_int8``, ``chip_onnx``),
        images where the chip equals the framework (``torch_equal``, ``onnx_equal``), the
        number of images and the chip statistics of both runs (:func:`examples.flows.compare`).
    """
    import onnx
    import torch

    x, y = flows.load_digits()
    train_rows = np.random.default_rng(0).permutation(len(x))[:1200]
    model = flows.train(mlp(), x[train_rows], y[train_rows], epochs=300)
    calibration = x[train_rows]
    quantized = flows.quantize_eager(model, calibration, fuse=[["fc1", "relu"]])
    with torch.no_grad():
        float_out = model(torch.from_numpy(x)).numpy()
        torch_q = quantized.fc2(quantized.fc1(quantized.quant(torch.from_numpy(x))))
    torch_q = torch_q.int_repr().numpy()
    network = driver.from_torch(quantized, name="digits (PyTorch)")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_model = onnx.load(str(flows.export_onnx(model, calibration, folder or tmp,
                                                     name="digits")))
    onnx_network = driver.load_onnx(onnx_model, name="digits (ONNX)")
    ort_out = flows.onnxruntime_run(onnx_model, x)

    if images is not None:
        x, y, float_out, torch_q, ort_out = (a[:images] for a in (x, y, float_out, torch_q,
                                                                   ort_out))
    echo(f"digits: {len(x)} images, MLP 64-{HIDDEN}-10, chip {config or driver.NpuConfig()}")
    with driver.open(backend, config=config, **(options or {})) as npu:
        chip_torch, torch_stats = flows.run_on_chip(npu, network, network.quantize(x),
                                                    "PyTorch model", echo)
        chip_onnx, onnx_stats = flows.run_on_chip(npu, onnx_network, onnx_network.quantize(x),
                                                  "ONNX model", echo)
        link = getattr(npu.backend, "summary", None)
        link = link() if link is not None else None
        if link is not None:
            flows.report_link(link, echo)
    result = flows.compare(y, float_out=float_out, torch_q=torch_q, chip_torch=chip_torch,
                           torch_stats=torch_stats, ort_out=ort_out,
                           ort_q=onnx_network.output.quantize(ort_out), chip_onnx=chip_onnx,
                           onnx_stats=onnx_stats)
    flows.report(result, echo)
    result["link"] = link
    return result


def _passed(result):
    return result["torch_equal"] == result["onnx_equal"] == result["images"]


if __name__ == "__main__":
    flows.cli(main, __doc__.split("\n")[0], passed=_passed)
