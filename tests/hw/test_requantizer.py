# amaranth: UnusedElaboratable=no
"""The requantizer against the big-integer reference.

Verifies ``hw/requantizer.py`` column by column against
``requant_reference.requantize_reference`` (exact fractions, no shared code with the
hardware or the golden model): an edge sweep (int32 saturation of ``acc + bias``
both ways, shifts 1 and 63, exact ties and near-ties under each rounding mode on
both signs, clamps with ``low > high``, ReLU and ReLU6 bounds, results outside a
byte's range truncated to their low byte), then random parameters per column over
their whole ranges, with lanes for every column and with fewer lanes than columns
(a row in chunks).  Rows go in with random ``n`` (the bytes from ``n`` up to the
row's end are zero) and random ``raw`` (``4 * n`` little-endian int32 bytes, mixed
with requantized rows: they keep their order).  The parameters change only between
batches, once the pipeline has drained, as during a store; ``rows`` sees random idle
cycles and ``vectors`` random backpressure.
"""

import random
from dataclasses import replace
from fractions import Fraction

import pytest
from harness import Monitor, as_bytes, simulate, wait_for
from requant_reference import INT32_MAX, INT32_MIN, requantize_reference
from streams import StreamStalls, stream_get, stream_put

from hw import isa
from hw.config import NpuConfig
from hw.isa import ParamRecord, Rounding
from hw.requantizer import Requantizer

PARAM_NAMES = [f.name for f in isa.PARAM_FIELDS if not f.name.startswith("reserved")]
#: Five lanes for five columns; two lanes taking a row in up to three chunks (the last
#: one part empty); one column.
CONFIGS = [NpuConfig(rows=2, cols=5), NpuConfig(rows=1, cols=5, requant_lanes=2),
           NpuConfig(rows=1, cols=1)]


def _reference(acc, record):
    return requantize_reference(acc, **{k: getattr(record, k) for k in PARAM_NAMES
                                        if k != "weight_zero"})


def _tie_cases():
    """Exact ties (and their neighbours) of t * multiplier / 2**shift, every mode, both signs."""
    cases = []
    for rounding in Rounding:
        for k in range(-3, 3):
            # shift 1, multiplier 1: t = 2k + 1 is k + 1/2.
            cases.append((2 * k + 1, ParamRecord(multiplier=1, shift=1, rounding=rounding)))
            # multiplier 3, shift 20, the bias adding in: (2k + 1) * 3/2, and one step above.
            t, bias = (2 * k + 1) << 19, 1000 * k - 7
            for step in (0, 1):
                cases.append((t + step - bias, ParamRecord(bias=bias, multiplier=3, shift=20,
                                                           rounding=rounding)))
        # shift 62: -2**31 * 2**30 / 2**62 is exactly -1/2.
        cases.append((INT32_MIN, ParamRecord(multiplier=1 << 30, shift=62, rounding=rounding)))
    ties = [(t, r) for t, r in cases
            if Fraction((t + r.bias) * r.multiplier, 2 ** r.shift).denominator == 2]
    assert len(ties) == len(Rounding) * 13       # the sweep holds ties of every mode
    return cases


def _edge_cases():
    big = (1 << 31) - 1
    cases = [
        # saturation of acc + bias, upwards and downwards
        (INT32_MAX, ParamRecord(bias=1, multiplier=big, shift=31, low=-256, high=255)),
        (INT32_MAX, ParamRecord(bias=INT32_MAX, multiplier=big, shift=32, low=-256, high=255)),
        (INT32_MIN, ParamRecord(bias=-1, multiplier=big, shift=31, low=-256, high=255)),
        (INT32_MIN, ParamRecord(bias=INT32_MIN, multiplier=big, shift=32, low=-256, high=255)),
        (INT32_MAX - 5, ParamRecord(bias=5, multiplier=1, shift=24, low=-256, high=255)),
        # shift 63: the largest products still round to 0 (floor -1 below zero)
        (INT32_MIN, ParamRecord(multiplier=big, shift=63)),
        (INT32_MAX, ParamRecord(multiplier=big, shift=63)),
        (-1, ParamRecord(multiplier=big, shift=63)),
        # shift 1 with the largest product: clamped
        (INT32_MAX, ParamRecord(multiplier=big, shift=1)),
        (INT32_MIN, ParamRecord(multiplier=big, shift=1)),
        # clamps, including low > high (high wins)
        (1000, ParamRecord(multiplier=1, shift=1, low=100, high=-100)),
        (-1000, ParamRecord(multiplier=1, shift=1, low=100, high=-100)),
        (0, ParamRecord(multiplier=1, shift=1, output_zero=-256, low=-256, high=255)),
        (0, ParamRecord(multiplier=1, shift=1, output_zero=255, low=-256, high=255)),
        # outside a byte: the low byte leaves
        (-600, ParamRecord(multiplier=1, shift=1, low=-256, high=255)),
        (600, ParamRecord(multiplier=1, shift=1, low=-256, high=255)),
        (-2, ParamRecord(multiplier=1, shift=1, low=-256, high=255)),
    ]
    for zero in (-128, 0, 37, 255):
        for acc in (-500, -2, 0, 3, 500):
            # ReLU: low = output_zero; ReLU6-like: high = output_zero + 6 / scale
            cases.append((acc, ParamRecord(multiplier=1 << 30, shift=31, output_zero=zero,
                                           low=max(-128, zero), high=255)))
            cases.append((acc, ParamRecord(multiplier=1 << 30, shift=31, output_zero=zero,
                                           low=zero, high=min(255, zero + 12))))
    return cases + _tie_cases() + _float32_cases() + _saturation_cases()


def _float32_cases():
    """The 24-bit roundings of t and of the product: ties, near-ties, powers of two."""
    wide = dict(low=-256, high=255, rounding=Rounding.FLOAT32)
    cases = []
    for t in (INT32_MAX, INT32_MIN, INT32_MAX - 127, INT32_MAX - 128, (1 << 24) + 1,
              (1 << 24) + 3, (1 << 25) + 2, (1 << 25) + 6, (1 << 24) - 1, 1 << 24):
        for sign in (1, -1):
            cases.append((sign * t, ParamRecord(multiplier=1, shift=24, **wide)))
            cases.append((sign * t, ParamRecord(multiplier=(1 << 31) - 1, shift=55, **wide)))
    for k in (23, 24, 25, 30, 31):
        cases.append((-(1 << k), ParamRecord(multiplier=(1 << 30) + 1, shift=k + 22, **wide)))
    # (2**23 + 1) * 3 = 3 * 2**23 + 3: the product drops one bit, an exact tie (odd: up);
    # (2**23 + 1) * (2**24 + 1): the product's dropped bits just above half.
    for multiplier, shift in ((3, 18), ((1 << 24) + 1, 40), ((1 << 24) - 1, 40)):
        for t in ((1 << 23) + 1, (1 << 23) + 2, (1 << 23) - 1):
            for sign in (1, -1):
                cases.append((sign * t, ParamRecord(multiplier=multiplier, shift=shift, **wide)))
    return cases


def _saturation_cases():
    """Floors next to where the hardware saturates them, offset back into the clamp."""
    cases = []
    for target in (2047, 2048, 4095, 4096, 8191, -2048, -2049, -4096, -4097, -8192):
        for zero in (-256, 255):
            clamp = dict(output_zero=zero, low=-256, high=255)
            cases.append((2 * target + 1, ParamRecord(multiplier=1, shift=1, **clamp)))
            cases.append((target << 16, ParamRecord(multiplier=1 << 14, shift=30,
                                                    rounding=Rounding.FLOAT32, **clamp)))
    return cases


def _random_record(rng):
    return ParamRecord(bias=rng.randint(INT32_MIN, INT32_MAX) >> rng.randrange(32),
                       multiplier=rng.randrange(1 << 31), shift=rng.randint(1, 63),
                       rounding=rng.choice(list(Rounding)), weight_zero=rng.randint(-256, 255),
                       output_zero=rng.randint(-256, 255), low=rng.randint(-256, 255),
                       high=rng.randint(-256, 255))


def _random_acc(rng):
    return rng.randint(INT32_MIN, INT32_MAX) >> rng.randrange(32)


def _expected(config, row, records):
    """Bytes and length of the output vector of one row."""
    n = row["n"]
    if row["raw"]:
        data = b"".join(v.to_bytes(4, "little", signed=True) for v in row["values"][:n])
        width = 4 * config.cols
    else:
        data = bytes(_reference(v, r) & 0xFF
                     for v, r in zip(row["values"][:n], records, strict=False))
        width = config.cols
    return data + bytes(width - len(data)), len(data)


def _batches(config, rng):
    """(records, rows) pairs: the edge sweep, a column per case, then random records."""
    cols = config.cols
    edge = _edge_cases()
    batches = []
    for i in range(0, len(edge), cols):
        chunk = edge[i:i + cols]
        chunk += [(0, ParamRecord())] * (cols - len(chunk))
        records = [r for _, r in chunk]
        rows = [{"values": [acc for acc, _ in chunk], "raw": 0, "n": cols}]
        batches.append((records, rows))
    for _ in range(8):
        records = [_random_record(rng) for _ in range(cols)]
        batches.append((records, []))
    for _ in range(4):
        # float32 scales: multipliers of 24 significant bits, as the frameworks' scales
        records = [replace(_random_record(rng), rounding=Rounding.FLOAT32,
                           multiplier=rng.randrange(1 << 23, 1 << 24) << 7) for _ in range(cols)]
        batches.append((records, []))
    for _, rows in batches:
        rows += [{"values": [_random_acc(rng) for _ in range(cols)],
                  "raw": int(rng.random() < 0.3), "n": rng.randint(1, cols)} for _ in range(6)]
    return batches


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"cols{c.cols}-lanes{c.requant_lanes}")
def test_requantizer_matches_big_int_reference(config):
    rng = random.Random(config.cols)
    dut = Requantizer(config=config)
    batches = _batches(config, rng)
    total = sum(len(rows) for _, rows in batches)
    results = []

    async def driver(ctx):
        stalls, sent = StreamStalls(seed=1), 0
        for records, rows in batches:
            # The parameters change only once the pipeline has drained.
            await wait_for(ctx, lambda sent=sent: len(results) == sent)
            ctx.set(dut.params, [{k: getattr(r, k) for k in PARAM_NAMES} for r in records])
            for row in rows:
                await stream_put(ctx, dut.rows, row, stalls)
                sent += 1

    async def receiver(ctx):
        stalls = StreamStalls(seed=2, probability=0.5)
        for _ in range(total):
            results.append(await stream_get(ctx, dut.vectors, stalls))

    monitor = Monitor({"vectors": dut.vectors})
    simulate(dut, driver, receiver, background=[monitor.process])
    expected = [_expected(config, row, records) for records, rows in batches for row in rows]
    assert [(as_bytes(v.bytes, len(data)), v.length)
            for v, (data, _) in zip(results, expected, strict=True)] == expected


def test_requantizer_config_wrong():
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        Requantizer(config=None)
