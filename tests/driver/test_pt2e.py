"""PT2E graphs (torchao's prepare_pt2e/convert_pt2e with the XNNPACK quantizer)."""

import warnings

import numpy as np
import pytest

import driver

pytestmark = pytest.mark.filterwarnings("ignore")
torch = pytest.importorskip("torch")
pt2e = pytest.importorskip("torchao.quantization.pt2e.quantize_pt2e")
xnnpack = pytest.importorskip("torchao.testing.pt2e._xnnpack_quantizer")


class CNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 6, 3)
        self.fc = torch.nn.Linear(6 * 2 * 2, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        return self.fc(torch.flatten(torch.relu(self.conv2(x)), 1))


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(23, 17), torch.nn.Linear(17, 7)

    def forward(self, x):
        return torch.relu(self.fc2(torch.relu(self.fc1(x))))


def converted(model, example, per_channel):
    quantizer = xnnpack.XNNPACKQuantizer().set_global(
        xnnpack.get_symmetric_quantization_config(is_per_channel=per_channel))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = torch.export.Dim("batch", min=2)
        exported = torch.export.export(model, (example,),
                                       dynamic_shapes=({0: batch},)).module()
        prepared = pt2e.prepare_pt2e(exported, quantizer)
        prepared(example)
        return pt2e.convert_pt2e(prepared)


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_pt2e_matches_torchao(kind, per_channel):
    """The chip runs the integer arithmetic; the PT2E graph computes each layer in float
    between dequantize and quantize: equal except one step on rare ties, bounded as a
    QDQ model's float path."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    if kind == "cnn":
        model, shape = CNN().eval(), (1, 8, 8)
    else:
        model, shape = MLP().eval(), (23,)
    example = torch.from_numpy(rng.uniform(0, 1, size=(64, *shape)).astype(np.float32))
    graph = converted(model, example, per_channel)
    net = driver.from_torch(graph, input_shape=shape)
    assert net.input.qtype is driver.QuantType.INT8
    x = rng.uniform(0, 1, size=(1000, *shape)).astype(np.float32)
    x_q = net.quantize(x.reshape(1000, -1))
    with driver.open("golden") as npu:
        chip = npu.run(net, x_q)
    np.testing.assert_array_equal(chip, net.reference(x_q))
    framework = graph(torch.from_numpy(x)).detach().numpy().reshape(1000, -1)
    steps = np.abs(chip.astype(np.int64) - net.output.quantize(framework).astype(np.int64))
    rate = np.count_nonzero(steps) / steps.size
    print(f"\nPT2E {kind}: {np.count_nonzero(steps)} of {steps.size} outputs differ from the "
          f"float graph ({rate:.2e}), at most {steps.max()} step(s)")
    assert steps.max() <= 1 and rate < 0.01
