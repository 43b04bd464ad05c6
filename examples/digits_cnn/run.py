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

import copy
import tempfile

import numpy as np

import driver
from driver.layers import HOST_LAYERS
from examples import flows

__all__ = ["main", "cnn", "prune_model"]

FUSE = [["conv1", "relu1"], ["conv2", "relu2"]]


def cnn(*, seed=0):
    """An untrained float CNN between a QuantStub and a DeQuantStub:
    1x8x8 -> conv 8x3x3 -> ReLU -> pool -> conv 16x3x3 -> ReLU -> pool -> Linear 10."""
    import torch

    class CNN(torch.nn.Module):
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

    torch.manual_seed(seed)
    return CNN()


def prune_model(model, amount, x, y, *, epochs=150):
    """``model`` pruned by input channel (L2 norm) in ``conv2`` and ``fc``, fine-tuned."""
    from torch.nn.utils import prune
    pruned = copy.deepcopy(model)
    for layer in (pruned.conv2, pruned.fc):
        prune.ln_structured(layer, "weight", amount=amount, n=2, dim=1)
    flows.train(pruned, x, y, epochs=epochs)
    for layer in (pruned.conv2, pruned.fc):
        prune.remove(layer, "weight")
    return pruned.eval()


def _torch_int8(quantized, x):
    """The quantized model's own uint8 output (before its DeQuantStub)."""
    import torch
    m = quantized
    with torch.no_grad():
        h = m.pool(m.conv1(m.quant(torch.from_numpy(x))))
        return m.fc(m.flatten(m.pool(m.conv2(h)))).int_repr().numpy()


def main(backend="verilator", *, config=None, echo=print, folder=None, prune=(0.5, 0.9),
         epochs=200):
    """Train, quantize and run the digits CNN on ``backend``; return the figures.

    Returns
    -------
    dict
        The figures of :func:`examples.flows.compare` and, per pruning amount
        (``pruned``), its accuracy, images equal to PyTorch and statistics.
    """
    import onnx
    import torch

    x, y = flows.load_digits()
    flat, x = x, x.reshape(-1, 1, 8, 8)
    train_rows = np.random.default_rng(0).permutation(len(x))[:1200]
    model = flows.train(cnn(), x[train_rows], y[train_rows], epochs=epochs)
    calibration = x[train_rows]
    quantized = flows.quantize_eager(model, calibration, fuse=FUSE)
    with torch.no_grad():
        float_out = model(torch.from_numpy(x)).numpy()
    torch_q = _torch_int8(quantized, x)
    network = driver.from_torch(quantized, input_shape=(1, 8, 8), name="digits CNN (PyTorch)")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_model = onnx.load(str(flows.export_onnx(model, calibration, folder or tmp,
                                                     name="cnn")))
    onnx_network = driver.load_onnx(onnx_model, name="digits CNN (ONNX)")
    ort_out = flows.onnxruntime_run(onnx_model, x)

    echo(f"digits CNN: {len(x)} images, chip {config or driver.NpuConfig()}")
    for layer in network.layers:
        echo(f"  {'host' if isinstance(layer, HOST_LAYERS) else 'chip'}: {layer!r}")
    with driver.open(backend, config=config) as npu:
        chip_torch, torch_stats = flows.run_on_chip(npu, network, network.quantize(flat),
                                                    "PyTorch model", echo)
        chip_onnx, onnx_stats = flows.run_on_chip(npu, onnx_network,
                                                  onnx_network.quantize(flat), "ONNX model",
                                                  echo)
        pruned = {}
        for amount in prune:
            sparse = flows.quantize_eager(
                prune_model(model, amount, x[train_rows], y[train_rows],
                            epochs=epochs * 3 // 4), calibration, fuse=FUSE)
            sparse_net = driver.from_torch(sparse, input_shape=(1, 8, 8))
            chip_sparse, stats = flows.run_on_chip(npu, sparse_net, sparse_net.quantize(flat),
                                                   f"pruned {amount:.0%}", echo)
            pruned[amount] = {
                "accuracy": float((chip_sparse.argmax(1) == y).mean()),
                "torch_equal": int((chip_sparse == _torch_int8(sparse, x)).all(axis=1).sum()),
                "stats": stats}
    result = flows.compare(y, float_out=float_out, torch_q=torch_q, chip_torch=chip_torch,
                           torch_stats=torch_stats, ort_out=ort_out,
                           ort_q=onnx_network.output.quantize(ort_out), chip_onnx=chip_onnx,
                           onnx_stats=onnx_stats)
    result["pruned"] = pruned
    flows.report(result, echo)
    for amount, figures in pruned.items():
        stats = figures["stats"]
        dense = (stats.cycles or 0) + stats.cycles_saved
        echo(f"  pruned {amount:.0%}: accuracy {100 * figures['accuracy']:.1f} %, identical to "
             f"PyTorch on {figures['torch_equal']}/{len(x)} images, "
             f"{stats.cycles_saved:,} of {dense:,} cycles saved "
             f"({100 * stats.cycles_saved / max(dense, 1):.1f} %)")
    return result


def _passed(result):
    images = result["images"]
    return (result["torch_equal"] == result["onnx_equal"] == images
            and all(p["torch_equal"] == images for p in result["pruned"].values()))


if __name__ == "__main__":
    flows.cli(main, __doc__.split("\n")[0], passed=_passed)
