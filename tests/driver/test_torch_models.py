"""PyTorch CNNs (eager and FX, qnnpack), ``torch.relu`` in FX and the engine check."""

import warnings

import numpy as np
import pytest
from npu_builders import CONFIGS, compare_with_framework

import driver
from driver.quant import QuantizationError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
torch = pytest.importorskip("torch")
F = torch.nn.functional


def run_golden(net, x, config=None):
    with driver.open("golden", config=config) as npu:
        return npu.run(net, x)


def quantized(model, calibration, *, fx, per_channel, fuse=()):
    """``model`` converted by PyTorch's own eager or FX flow with the qnnpack qconfig."""
    from torch.ao.quantization import (
        QConfig,
        default_observer,
        default_per_channel_weight_observer,
        default_weight_observer,
    )
    qconfig = QConfig(activation=default_observer,
                      weight=default_per_channel_weight_observer if per_channel
                      else default_weight_observer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fx:
            from torch.ao.quantization import QConfigMapping
            from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
            prepared = prepare_fx(model, QConfigMapping().set_global(qconfig), (calibration,))
            prepared(calibration)
            return convert_fx(prepared)
        if fuse:
            model = torch.ao.quantization.fuse_modules(model, list(fuse))
        model.qconfig = qconfig
        prepared = torch.ao.quantization.prepare(model)
        prepared(calibration)
        return torch.ao.quantization.convert(prepared)


class EagerCNN(torch.nn.Module):
    def __init__(self, conv=None):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv1 = conv or torch.nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2)
        self.conv2 = torch.nn.Conv2d(self.conv1.out_channels, 6, 3)
        self.flatten = torch.nn.Flatten()
        self.fc = torch.nn.Linear(6 * 2 * 2, 10)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        x = self.pool(self.relu1(self.conv1(self.quant(x))))
        return self.dequant(self.fc(self.flatten(self.conv2(x))))


class FunctionalCNN(torch.nn.Module):
    def __init__(self, relu):
        super().__init__()
        self.relu = relu
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 6, 3)
        self.fc = torch.nn.Linear(6 * 2 * 2, 10)

    def forward(self, x):
        x = F.max_pool2d(self.relu(self.conv1(x)), 2)
        x = torch.flatten(self.relu(self.conv2(x)), 1)
        return self.relu(self.fc(x))


def images(seed, count=200):
    return torch.from_numpy(np.random.default_rng(seed).uniform(0, 1, size=(count, 1, 8, 8))
                            .astype(np.float32))


def check_model(converted, x, config=None):
    net = driver.from_torch(converted, input_shape=(1, 8, 8))
    x_q = net.quantize(x.numpy()).reshape(len(x), -1)
    chip = run_golden(net, x_q, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        framework = converted(x).numpy().reshape(len(x), -1)
    np.testing.assert_array_equal(chip, net.reference(x_q))
    np.testing.assert_array_equal(net.dequantize(chip), framework)
    return net


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_eager_cnn_matches_qnnpack(per_channel):
    torch.manual_seed(0)
    model = EagerCNN().eval()
    converted = quantized(model, images(1), fx=False, per_channel=per_channel,
                          fuse=[["conv1", "relu1"]])
    assert type(converted.conv1).__name__ == "ConvReLU2d"
    net = check_model(converted, images(2), CONFIGS["4x4"])
    assert [type(layer).__name__ for layer in net.layers] == [
        "QuantConv2d", "MaxPool2d", "QuantConv2d", "QuantLinear"]


@pytest.mark.parametrize("relu", [F.relu, torch.relu], ids=["F.relu", "torch.relu"])
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_fx_cnn_matches_qnnpack(relu, per_channel):
    """FX fuses ``F.relu``; it leaves ``torch.relu`` in float between dequantize and
    quantize, which the driver runs as a host table computed by PyTorch."""
    torch.manual_seed(1)
    converted = quantized(FunctionalCNN(relu).eval(), images(3), fx=True,
                          per_channel=per_channel)
    check_model(converted, images(4), CONFIGS["2x3"])


CONVS = {
    "stride_pad": dict(in_channels=3, out_channels=5, kernel_size=3, stride=2, padding=1),
    "dilation": dict(in_channels=2, out_channels=3, kernel_size=3, dilation=2, padding=2),
    "groups": dict(in_channels=4, out_channels=6, kernel_size=(3, 1), groups=2, padding=(1, 0)),
    "depthwise": dict(in_channels=3, out_channels=3, kernel_size=3, groups=3),
}


@pytest.mark.parametrize("conv", CONVS)
def test_conv_module_matches_qnnpack(conv):
    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.conv = torch.nn.Conv2d(**CONVS[conv])
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.conv(self.quant(x)))

    torch.manual_seed(len(conv))
    c = CONVS[conv]["in_channels"]
    x = torch.from_numpy(np.random.default_rng(5).normal(size=(20, c, 9, 8)).astype(np.float32))
    converted = quantized(One().eval(), x, fx=False, per_channel=True)
    net = driver.from_torch(converted, input_shape=(c, 9, 8))
    x_q = net.quantize(x.numpy()).reshape(20, -1)
    chip = run_golden(net, x_q, CONFIGS["4x4"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        framework = converted.conv(converted.quant(x)).int_repr().numpy().reshape(20, -1)
    (layer,) = net.layers
    compare_with_framework(chip, framework, layer.reference(x_q),
                           layer.reference(x_q, arithmetic="float32"))


def test_conv_without_input_shape_wrong():
    torch.manual_seed(0)
    converted = quantized(EagerCNN().eval(), images(1), fx=False, per_channel=True)
    with pytest.raises(TypeError, match="pass input_shape"):
        driver.from_torch(converted)


def test_x86_engine_wrong():
    """Models for the x86/fbgemm engines are refused, with the engine to use."""
    torch.manual_seed(0)
    converted = quantized(EagerCNN().eval(), images(1), fx=False, per_channel=True)
    previous = torch.backends.quantized.engine
    try:
        for engine in ("x86", "fbgemm"):
            torch.backends.quantized.engine = engine
            with pytest.raises(QuantizationError, match=f"engine is '{engine}'.*'qnnpack'"):
                driver.from_torch(converted, input_shape=(1, 8, 8))
    finally:
        torch.backends.quantized.engine = previous


def test_model_packed_for_x86_wrong():
    """A model converted under the x86 or fbgemm engine keeps those kernels after the
    engine is switched back to qnnpack; the import probes PyTorch's own kernels and
    refuses it, saying which engine to use."""
    import copy
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.ao.quantization.QuantStub(), torch.nn.Linear(64, 32),
                                torch.nn.ReLU(), torch.nn.Linear(32, 10),
                                torch.ao.quantization.DeQuantStub()).eval()
    previous = torch.backends.quantized.engine
    for engine in ("x86", "fbgemm"):
        try:
            torch.backends.quantized.engine = engine
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                prepared = copy.deepcopy(model)
                prepared.qconfig = torch.ao.quantization.get_default_qconfig(engine)
                prepared = torch.ao.quantization.prepare(prepared)
                prepared(torch.randn(256, 64))
                converted = torch.ao.quantization.convert(prepared)
        finally:
            torch.backends.quantized.engine = previous
        with pytest.raises(QuantizationError, match="packed for the x86/fbgemm engine.*'qnnpack'"):
            driver.from_torch(converted)
