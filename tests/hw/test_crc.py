# amaranth: UnusedElaboratable=no
"""CRCs (``hw/crc.py``): the Python algorithm against the catalogue's check values and
Python's own CRCs (``zlib.crc32``, ``binascii.crc_hqx``) on random data, and the gateware
against the Python algorithm on random messages with random idle cycles and clears.
"""

import binascii
import random
import zlib

import pytest
from harness import simulate

from hw.crc import CRC_16_CCITT_FALSE, CRC_32, Crc, CrcAlgorithm

ALGORITHMS = [CRC_32, CRC_16_CCITT_FALSE]
#: Python's C implementations of the same CRCs.
LIBRARY = {
    CRC_32.name: zlib.crc32,
    CRC_16_CCITT_FALSE.name: lambda data: binascii.crc_hqx(data, 0xFFFF),
}


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_crc_check_value(algorithm):
    assert algorithm.compute(b"123456789") == algorithm.check


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_crc_equals_library(algorithm):
    rng = random.Random(algorithm.width)
    for length in list(range(40)) + [rng.randrange(40, 2000) for _ in range(50)]:
        data = rng.randbytes(length)
        assert algorithm.compute(data) == LIBRARY[algorithm.name](data), data.hex()


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_crc_update_continues(algorithm):
    rng = random.Random(1)
    data = rng.randbytes(100)
    split = algorithm.update(algorithm.update(algorithm.start, data[:37]), data[37:])
    assert algorithm.finish(split) == algorithm.compute(data)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_crc_gateware_equals_python(algorithm):
    rng = random.Random(algorithm.width + 1)
    messages = [rng.randbytes(rng.choice([0, 1, 2, 5, 17, 64])) for _ in range(30)]
    dut = Crc(algorithm=algorithm)
    results = []

    async def testbench(ctx):
        for message in messages:
            # The clear comes alone or with the first byte.
            together = bool(message) and rng.random() < 0.5
            ctx.set(dut.clear, 1)
            if together:
                ctx.set(dut.valid, 1)
                ctx.set(dut.data, message[0])
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for byte in message[1:] if together else message:
                while rng.random() < 0.3:       # idle cycles with junk on data
                    ctx.set(dut.valid, 0)
                    ctx.set(dut.data, rng.randrange(256))
                    await ctx.tick()
                ctx.set(dut.valid, 1)
                ctx.set(dut.data, byte)
                await ctx.tick()
            ctx.set(dut.valid, 0)
            results.append(ctx.get(dut.value))
            await ctx.tick()
            assert ctx.get(dut.value) == results[-1], "the CRC changed without a byte"

    simulate(dut, testbench)
    assert results == [algorithm.compute(m) for m in messages]


def test_crc_algorithm_wrong():
    good = dict(name="x", width=16, polynomial=0x1021, initial=0, reflect=False,
                xor_out=0, check=0)
    with pytest.raises(ValueError, match="width must be at least 8, not 7"):
        CrcAlgorithm(**{**good, "width": 7})
    with pytest.raises(TypeError, match="width must be an integer, not 16.0"):
        CrcAlgorithm(**{**good, "width": 16.0})
    with pytest.raises(ValueError, match="polynomial must fit 16 bits, not 0x11021"):
        CrcAlgorithm(**{**good, "polynomial": 0x11021})
    with pytest.raises(ValueError, match="polynomial must have its x\\*\\*0 term set"):
        CrcAlgorithm(**{**good, "polynomial": 0x1020})
    with pytest.raises(TypeError, match="reflect must be a bool, not 1"):
        CrcAlgorithm(**{**good, "reflect": 1})
    with pytest.raises(TypeError, match="initial must be an integer, not None"):
        CrcAlgorithm(**{**good, "initial": None})
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        CrcAlgorithm(**{**good, "name": ""})
    with pytest.raises(TypeError, match="data must be bytes, not 'abc'"):
        CRC_32.compute("abc")


def test_crc_component_wrong():
    with pytest.raises(TypeError, match="algorithm must be a CrcAlgorithm, not 'crc32'"):
        Crc(algorithm="crc32")
