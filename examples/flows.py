"""What every example does around the chip: data, training, the frameworks' own
quantization flows, the chip run and the comparison with the frameworks.

The examples differ only in their model; each hands it here with the names of the
layers PyTorch should fuse with their ReLU.
"""

import logging
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["load_digits", "train", "quantize_eager", "export_onnx", "onnxruntime_run",
           "run_on_chip", "compare", "report", "report_link", "cli"]


def load_digits():
    """scikit-learn's bundled 8x8 digits (no download): ``x`` in [0, 1] float32 [N, 64],
    ``y`` int64 [N]."""
    from sklearn.datasets import load_digits as load
    digits = load()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


def train(model, x, y, *, epochs, seed=0):
    """``model`` trained on ``x``, ``y`` by full-batch Adam, returned in eval mode.

    Pruning masks applied with ``torch.nn.utils.prune`` stay applied.
    """
    import torch
    torch.manual_seed(seed)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        optimizer.step()
    return model.eval()


def quantize_eager(model, calibration, *, fuse):
    """Static int8 quantization of a copy of ``model`` with PyTorch's eager mode and the
    qnnpack engine.

    ``model`` has a ``quant`` QuantStub and a ``dequant`` DeQuantStub around its layers;
    ``fuse`` lists the ``[layer, relu]`` name pairs to fuse.
    """
    import copy

    import torch
    torch.backends.quantized.engine = "qnnpack"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = copy.deepcopy(model).eval()
        q.qconfig = torch.ao.quantization.get_default_qconfig("qnnpack")
        q = torch.ao.quantization.fuse_modules(q, fuse)
        prepared = torch.ao.quantization.prepare(q)
        prepared(torch.from_numpy(calibration))
        return torch.ao.quantization.convert(prepared)


def export_onnx(model, calibration, folder, *, name):
    """The float ``model`` exported by PyTorch to ``folder/name.onnx`` and quantized by
    onnxruntime (QOperator, uint8, per channel) into ``folder/name_int8.onnx``.

    The float model's QuantStub and DeQuantStub are identities, so they export as nothing.
    """
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

    float_path, int8_path = Path(folder) / f"{name}.onnx", Path(folder) / f"{name}_int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.from_numpy(calibration[:1]),), str(float_path),
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    # The quantizer suggests shape-inference pre-processing, which these models do not need.
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR
    try:
        quantize_static(str(float_path), str(int8_path), Reader(),
                        quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QUInt8, per_channel=True, reduce_range=True)
    finally:
        root.setLevel(level)
    return int8_path


def onnxruntime_run(onnx_model, x):
    """``onnx_model``'s float output for input ``x``, computed by onnxruntime on the CPU."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def run_on_chip(npu, network, x_q, label, echo):
    """``network`` on ``npu`` for the quantized batch ``x_q``; echoes one line of figures.

    Returns the quantized output and the run's :class:`driver.RunStats`.
    """
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


def compare(y, *, float_out, torch_q, chip_torch, torch_stats, ort_out, ort_q, chip_onnx,
            onnx_stats):
    """The figures every example reports: accuracies against the labels ``y`` and the
    images where the chip's output equals the framework's, byte for byte."""
    def accuracy(out):
        return float((out.argmax(1) == y).mean())

    return {
        "images": len(y),
        "float": accuracy(float_out),
        "torch_int8": accuracy(torch_q),
        "chip_torch": accuracy(chip_torch),
        "torch_equal": int((chip_torch == torch_q).all(axis=1).sum()),
        "onnx_int8": accuracy(ort_out),
        "chip_onnx": accuracy(chip_onnx),
        "onnx_equal": int((chip_onnx == ort_q).all(axis=1).sum()),
        "torch_stats": torch_stats,
        "onnx_stats": onnx_stats,
    }


def report(result, echo):
    """Echo the accuracy and equality lines of :func:`compare`'s ``result``."""
    percent = {key: f"{100 * result[key]:.1f} %" for key in
               ("float", "torch_int8", "chip_torch", "onnx_int8", "chip_onnx")}
    images = result["images"]
    echo(f"  accuracy: float {percent['float']}, PyTorch int8 {percent['torch_int8']}, "
         f"chip {percent['chip_torch']}; onnxruntime int8 {percent['onnx_int8']}, "
         f"chip {percent['chip_onnx']}")
    echo(f"  chip output identical to PyTorch on {result['torch_equal']}/{images} images, "
         f"to onnxruntime on {result['onnx_equal']}/{images} images")


def report_link(link, echo):
    """Echo the serial link's figures (:meth:`driver.backends.serial.SerialBackend.summary`)."""
    chip = ", ".join(f"{name[5:]} {value}" for name, value in link.items()
                     if name.startswith("chip_") and value)
    efficiency = link.get("efficiency")
    echo(f"  link: {link.get('frames_sent', 0)} frames sent ({link.get('frames_resent', 0)} "
         f"sent again), {link.get('frames_received', 0)} received, "
         f"{link.get('bytes_sent', 0):,} bytes sent, {link.get('bytes_received', 0):,} "
         f"received, payload "
         + ("n/a" if efficiency is None else f"{100 * efficiency:.1f} %")
         + f" of the line's bytes; results asked again {link.get('results_asked_again', 0)}, "
         f"duplicates dropped {link.get('duplicate_results', 0)}; chip counters: "
         + (chip or "all zero"))


def cli(main, description, *, passed):
    """The command line of an example: ``--backend`` and ``--config``; runs ``main`` and
    exits 0 when ``passed(result)`` (the chip equal to the frameworks), 1 otherwise."""
    import argparse

    from driver.backends.base import BACKENDS
    from hw.generate import config_argument
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", default="verilator", choices=list(BACKENDS),
                        help="the backend that runs the chip (default: verilator)")
    config_argument(parser)
    parser.add_argument("--port", help="serial backend: the board's serial device or a "
                                       "pyserial URL (e.g. /dev/ttyUSB0)")
    parser.add_argument("--baudrate", type=int, default=3_000_000,
                        help="serial backend: the line's baud rate (default 3000000)")
    args = parser.parse_args()
    extra = {}
    if args.backend == "serial":
        if not args.port:
            parser.error("--backend serial needs --port (e.g. --port /dev/ttyUSB0)")
        extra["options"] = {"port": args.port, "baudrate": args.baudrate}
    elif args.port:
        parser.error(f"--port is for --backend serial, not {args.backend}")
    raise SystemExit(0 if passed(main(args.backend, config=args.config, **extra)) else 1)
