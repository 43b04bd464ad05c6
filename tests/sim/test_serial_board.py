"""The serial backend against the simulated board (Verilator, UART pins included, bridged
to TCP: ``sim/serial_harness.py``), with and without the fault proxy between them.

One board is built for the module (4x4 chip, divisor 4) and served for every test; the
backend under test is the real ``driver.backends.serial`` over pyserial's ``socket://``
URL.  Every run is compared with the golden model: data-out bytes, status and data-in
taken.  With faults (bits flipped, bytes dropped, frames sent twice) the results must be
the same, with the retransmissions and the chip's error counters showing the faults were
there.
"""

import socket
import threading

import numpy as np
import pytest

from hw.config import NpuConfig
from hw.link_protocol import FrameType, encode_frame

pytest.importorskip("serial", reason="the serial backend needs pyserial")

from driver.backends.golden import GoldenBackend  # noqa: E402
from driver.backends.serial import LinkError, SerialBackend  # noqa: E402
from sim.fault_proxy import FaultProxy  # noqa: E402
from sim.programs import random_program  # noqa: E402
from sim.serial_harness import SimulatedBoard, serial_problem  # noqa: E402

CONFIG = NpuConfig(rows=4, cols=4)


@pytest.fixture(scope="module")
def board():
    problem = serial_problem()
    if problem:
        pytest.skip(problem)
    with SimulatedBoard(config=CONFIG) as simulated:
        yield simulated


def run_against_golden(backend, seed, programs):
    golden = GoldenBackend(config=CONFIG)
    rng = np.random.default_rng(seed)
    total = 0
    for _ in range(programs):
        program = random_program(CONFIG, rng, length=20)
        got = backend.execute(program.commands, program.data_in)
        want = golden.execute(program.commands, program.data_in)
        assert got.data_out == want.data_out
        assert got.status == want.status
        assert got.data_in_used == want.data_in_used
        assert got.cycles_measured and got.cycles > 0
        total += len(got.data_out)
    return total


def test_random_programs_on_the_simulated_board(board):
    with SerialBackend(config=CONFIG, port=board.url, timeout=10) as backend:
        out = run_against_golden(backend, seed=1, programs=6)
        summary = backend.summary()
    assert out > 0
    # A clean line: no UART byte lost or broken, no frame refused.  (Whether the host ever
    # sent a frame again depends on the timing of the machine, not on the link.)
    for name in ("framing_errors", "overruns", "rejected"):
        assert summary[f"chip_{name}"] == 0, name
    assert board.stats["tx_framing_errors"] == 0


def test_random_programs_through_faults(board):
    target = ("127.0.0.1", board.port)
    # Duplicates (sent whole) at 3 % of the frames, so that some are of sequenced frames
    # (not only STATUS requests): the chip's duplicate count is what this test checks.
    with FaultProxy(target=target, flip_rate=0.005, drop_rate=0.005, duplicate_rate=0.03,
                    seed=3) as proxy:
        with SerialBackend(config=CONFIG, port=proxy.url, timeout=10) as backend:
            run_against_golden(backend, seed=2, programs=6)
            summary = backend.summary()
        counts = proxy.counts
    for direction in ("to_chip", "to_host"):
        assert counts[direction]["flipped"] > 0 and counts[direction]["dropped"] > 0
    # The faults were seen and repaired on both sides.
    assert summary["chip_crc_errors"] + summary["chip_header_errors"] \
        + summary["chip_truncated"] > 0
    assert summary.get("frames_resent", 0) > 0
    assert summary["chip_retransmissions"] > 0 or summary.get("results_asked_again", 0) > 0
    assert summary["chip_duplicates"] > 0


def test_a_pulled_cable_raises_link_error(board):
    target = ("127.0.0.1", board.port)
    with FaultProxy(target=target) as proxy:
        with SerialBackend(config=CONFIG, port=proxy.url, timeout=1.0) as backend:
            run_against_golden(backend, seed=4, programs=1)
            proxy.cut()
            program = random_program(CONFIG, np.random.default_rng(5), length=20)
            with pytest.raises(LinkError, match="no answer from the chip") as error:
                backend.execute(program.commands, program.data_in)
        # The link's timeout ends it, not the run's (a RunTimeout would be no LinkError).
        assert "timeout 1 s" in str(error.value)


def _silent_server():
    """A TCP server that takes every byte and never answers (a board without the
    link's bitstream)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        connection, _ = listener.accept()
        with connection:
            while connection.recv(4096):
                pass

    threading.Thread(target=serve, daemon=True).start()
    return listener


def test_no_answer_at_open_raises_link_error():
    listener = _silent_server()
    with listener:
        port = listener.getsockname()[1]
        with pytest.raises(LinkError, match="while resetting the chip"):
            SerialBackend(config=CONFIG, port=f"socket://127.0.0.1:{port}", timeout=0.5)


def test_a_stalled_chip_raises_run_timeout(board):
    from driver.lowering import lower  # noqa: F401 (the driver is importable)
    from hw import isa
    from sim.host_loop import RunTimeout
    with SerialBackend(config=CONFIG, port=board.url, timeout=5, run_timeout=1.0) as backend:
        # A load whose data never comes: the chip waits for ever.
        load = isa.LoadAct(addr=0, count=2, length=4).encode()
        with pytest.raises(RunTimeout, match="no progress") as error:
            backend.execute([load], b"")
        assert error.value.result is not None
        backend.reset()
        run_against_golden(backend, seed=6, programs=1)


def test_serial_backend_wrong():
    with pytest.raises(TypeError, match="needs port="):
        SerialBackend(config=CONFIG)
    with pytest.raises(TypeError, match="port must be a serial device or a pyserial URL, not 5"):
        SerialBackend(config=CONFIG, port=5)
    with pytest.raises(TypeError, match="baudrate must be a positive integer, not '3M'"):
        SerialBackend(config=CONFIG, port="loop://", baudrate="3M")
    with pytest.raises(TypeError, match="timeout must be a positive number of seconds, not 0"):
        SerialBackend(config=CONFIG, port="loop://", timeout=0)
    with pytest.raises(ValueError, match="max_payload must be in 32..256, not 1000"):
        SerialBackend(config=CONFIG, port="loop://", max_payload=1000)
    with pytest.raises(LinkError, match="cannot open serial port '/dev/no-such-port'"):
        SerialBackend(config=CONFIG, port="/dev/no-such-port")


def test_loopback_line_is_no_chip():
    # pyserial's loop:// echoes every byte: the backend sees its own frames, never an
    # answer of the chip, and says so within the timeout.
    with pytest.raises(LinkError, match="no answer from the chip"):
        SerialBackend(config=CONFIG, port="loop://", timeout=0.3)


def test_fault_proxy_wrong():
    with pytest.raises(TypeError, match=r"target must be a \(host, port\) pair, not 5"):
        FaultProxy(target=5)
    with pytest.raises(ValueError, match="flip_rate must be at least 0 and below 1, not 1.5"):
        FaultProxy(target=("127.0.0.1", 1), flip_rate=1.5)
    with pytest.raises(TypeError, match="drop_rate must be a number, not 'x'"):
        FaultProxy(target=("127.0.0.1", 1), drop_rate="x")


def test_frames_the_proxy_breaks_are_counted():
    # The proxy's own accounting on a known stream, without a board.
    import random

    from sim.fault_proxy import _Direction
    direction = _Direction(random.Random(0), flip_rate=0.0, drop_rate=0.0, duplicate_rate=0.5)
    frames = [encode_frame(FrameType.DATA, i, bytes([i]) * 10) for i in range(40)]
    out = direction.process(b"".join(frames))
    assert direction.counts["frames"] == 40
    assert len(out) == (40 + direction.counts["duplicated"]) * len(frames[0])
    assert 0 < direction.counts["duplicated"] < 40
    # A duplicated frame goes whole, twice, even on a line that breaks every other byte.
    broken = _Direction(random.Random(1), flip_rate=0.5, drop_rate=0.0, duplicate_rate=0.5)
    out = broken.process(b"".join(frames))
    doubled = [frame for frame in frames if out.count(frame + frame)]
    assert len(doubled) == broken.counts["duplicated"] > 0


def test_digits_mlp_through_faults_equals_the_framework(board):
    """The digits example's MLP over the serial backend, through 1 % of broken bytes each
    way: every output byte of the images run equals PyTorch's and onnxruntime's (and so
    the golden model's, which equals both on all 1797: tests/driver/test_cli.py)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    from examples.digits.run import main as digits
    target = ("127.0.0.1", board.port)
    with FaultProxy(target=target, flip_rate=0.005, drop_rate=0.005, duplicate_rate=0.01,
                    seed=7) as proxy:
        result = digits("serial", config=CONFIG, echo=lambda line: None, images=8,
                        options={"port": proxy.url, "timeout": 10})
        counts = proxy.counts
    assert result["images"] == 8
    assert result["torch_equal"] == result["onnx_equal"] == 8
    link = result["link"]
    assert counts["to_chip"]["dropped"] + counts["to_chip"]["flipped"] > 0
    assert link.get("frames_resent", 0) + link.get("results_asked_again", 0) > 0
    assert result["torch_stats"].cycles_measured and result["torch_stats"].cycles > 0


def test_cli_serial_wrong(tmp_path, capsys):
    from driver.cli import main
    args = ["run", "model.onnx", "--input", "x.npy", "--output", str(tmp_path / "y.npy")]
    assert main(args + ["--backend", "serial"]) == 1
    assert "--backend serial needs --port" in capsys.readouterr().err
    assert main(args + ["--backend", "golden", "--port", "/dev/ttyUSB0"]) == 1
    assert "--port and --baudrate are for --backend serial, not golden" \
        in capsys.readouterr().err
