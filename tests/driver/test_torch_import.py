"""PyTorch: quantized Linear modules and whole converted models against the qnnpack engine."""

import warnings

import numpy as np
import pytest
from npu_builders import CONFIGS, compare_with_framework, torch_linear, torch_run

import driver

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
torch = pytest.importorskip("torch")


def run_golden(layers, x, config=None):
    with driver.open("golden", config=config) as npu:
        return npu.run(layers, x)


SHAPES = [(1, 1, 1), (1, 1000, 3), (4, 1, 1000), (1, 1000, 1), (13, 31, 17), (64, 64, 10)]


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{k}x{n}" for m, k, n in SHAPES])
def test_linear_matches_qnnpack(shape, per_channel, relu):
    batch, k, n = shape
    rng = np.random.default_rng(k * 1009 + n + 7 * per_channel + relu)
    module = torch_linear(rng, k, n, per_channel=per_channel, relu=relu)
    scale, zero = float(rng.uniform(0.01, 0.05)), int(rng.integers(0, 256))
    layer = driver.linear_from_torch(module, input_scale=scale, input_zero_point=zero)
    x = rng.integers(0, 256, size=(batch, k)).astype(np.uint8)
    framework = torch_run(module, x, scale, zero)
    chip = run_golden(layer, x, CONFIGS["2x3"] if k * n < 5000 else None)
    compare_with_framework(chip, framework, layer.reference(x),
                           layer.reference(x, arithmetic="float32"))


class MLP(torch.nn.Module):
    def __init__(self, sizes):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        pairs = zip(sizes, sizes[1:], strict=False)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in pairs)
        self.relu = torch.nn.ReLU()
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = self.relu(x)
        return self.dequant(x)


def converted_mlp(sizes, seed):
    torch.manual_seed(seed)
    model = MLP(sizes).eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig("qnnpack")
    prepared = torch.ao.quantization.prepare(model)
    for _ in range(4):
        prepared(torch.randn(32, sizes[0]) * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.convert(prepared)


def test_model_chain_matches_qnnpack():
    sizes = [37, 29, 13, 10]
    model = converted_mlp(sizes, 0)
    net = driver.from_torch(model)
    assert [layer.activation.value for layer in net.layers] == ["relu", "relu", "none"]
    x = torch.randn(300, sizes[0]) * 2
    x_q = net.quantize(x.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected_q = model.quant(x).int_repr().numpy()
        framework = model(x).numpy()
    np.testing.assert_array_equal(x_q, expected_q)
    chip = run_golden(net, x_q, CONFIGS["shallow"])
    compare_with_framework(chip, net.output.quantize(framework), net.reference(x_q),
                           net.reference(x_q, arithmetic="float32"))
    np.testing.assert_array_equal(net.dequantize(chip), framework)


def test_fx_converted_model():
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 5)).eval()
    example = (torch.randn(8, 20),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(model, get_default_qconfig_mapping("qnnpack"), example)
        for _ in range(4):
            prepared(torch.randn(32, 20))
        converted = convert_fx(prepared)
        x = torch.randn(50, 20)
        framework = converted(x).numpy()
    net = driver.from_torch(converted)
    assert len(net) == 2 and net.layers[0].activation is driver.Activation.RELU
    x_q = net.quantize(x.numpy())
    chip = run_golden(net, x_q)
    exact, float32 = net.reference(x_q), net.reference(x_q, arithmetic="float32")
    compare_with_framework(chip, net.output.quantize(framework), exact, float32)


def test_exact_rounding_would_differ_from_qnnpack_rarely():
    """Why the chip's FLOAT32 rounding is the default: rounding the exact product instead
    (HALF_EVEN) differs from qnnpack's float32 arithmetic, rarely; FLOAT32 never does."""
    rng = np.random.default_rng(42)
    module = torch_linear(rng, 64, 64)
    scale, zero = 0.03, 120
    layer = driver.linear_from_torch(module, input_scale=scale, input_zero_point=zero)
    assert layer.rounding is driver.Rounding.FLOAT32
    x = rng.integers(0, 256, size=(4000, 64)).astype(np.uint8)
    framework = torch_run(module, x, scale, zero)
    np.testing.assert_array_equal(layer.reference(x), framework)
    exact = layer.reference(x, arithmetic="exact")
    differ = int(np.count_nonzero(exact != framework))
    rate = differ / exact.size
    print(f"\nqnnpack vs exact-product rounding: {differ} of {exact.size} outputs differ "
          f"({rate:.2e}); FLOAT32 rounding: 0")
    assert rate < 1e-4
    assert np.abs(exact.astype(np.int64) - framework).max() <= 1


def test_dynamic_linear_wrong():
    module = torch.ao.nn.quantized.dynamic.Linear(4, 3)
    with pytest.raises(TypeError, match="dynamic quantized Linear has float inputs"):
        driver.linear_from_torch(module, input_scale=0.1, input_zero_point=0)


def test_float_linear_wrong():
    with pytest.raises(TypeError, match="expected torch.ao.nn.quantized.Linear"):
        driver.linear_from_torch(torch.nn.Linear(3, 3), input_scale=0.1, input_zero_point=0)


def test_int8_activations_wrong():
    module = torch_linear(np.random.default_rng(0), 3, 3)
    with pytest.raises(driver.QuantizationError, match="XNNPACK"):
        driver.linear_from_torch(module, input_scale=0.1, input_zero_point=0,
                                      input_dtype="int8")


def test_unsupported_module_wrong():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.fc = torch.nn.Linear(4, 4)
            self.act = torch.nn.Sigmoid()
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.act(self.fc(self.quant(x))))

    model = Net().eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig("qnnpack")
    prepared = torch.ao.quantization.prepare(model)
    prepared(torch.randn(4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = torch.ao.quantization.convert(prepared)
    with pytest.raises(TypeError, match="act: unsupported call_module 'Sigmoid'"):
        driver.from_torch(converted)


def test_relu_before_linear_wrong():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.nn.quantized.Quantize(0.1, 0, torch.quint8)

        def forward(self, x):
            return torch.relu(self.quant(x))

    with pytest.raises(TypeError, match="a ReLU must follow a quantized Linear"):
        driver.from_torch(Net())


def test_exact_ties_round_half_to_even_like_the_frameworks():
    """Scales that make half the outputs exact ties: the ties-to-even roundings (HALF_EVEN
    and FLOAT32, exact here because small sums are exact in float32) match qnnpack and ORT."""
    from npu_builders import ort_run, qoperator_model
    from torch.ao.nn.quantized import Linear
    rng = np.random.default_rng(7)
    w = rng.integers(-3, 4, size=(16, 8)).astype(np.int8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qw = torch._make_per_tensor_quantized_tensor(torch.from_numpy(w), 0.25, 0)
    module = Linear(8, 16)
    module.set_weight_bias(qw, None)
    module.scale, module.zero_point = 0.25, 128
    x = rng.integers(120, 137, size=(2000, 8)).astype(np.uint8)
    torch_out = torch_run(module, x, 0.5, 128)
    for rounding in driver.Rounding:
        layer = driver.QuantLinear(weight=w, weight_scale=0.25, input_scale=0.5,
                                   input_zero_point=128, output_scale=0.25,
                                   output_zero_point=128, scale_order="torch", rounding=rounding)
        assert layer.scales[0] == 0.5       # t * 0.5: every odd t is a tie
        chip = run_golden(layer, x)
        ort_out = ort_run(qoperator_model(layer), x)
        matches = np.array_equal(chip, torch_out) and np.array_equal(chip, ort_out)
        assert matches == (rounding in (driver.Rounding.HALF_EVEN, driver.Rounding.FLOAT32))
