"""Hand-written commands with the error code each must raise: the rules' independent check.

``hw/isa.py`` declares every command's checks once, as rules, and the controller's
decoder and the golden model are both built from them.  This list is written by hand
from the ISA reference (``docs/isa.md``), not from the rules, so a rule written wrong
shows up here.  The controller's unit test runs every entry on the decoder and the golden
model; the cocotb testbench (``tests/rtl/npu_tb.py``) runs every malformed one on the
whole chip, then checks that nothing was corrupted.
"""

from hw import isa
from hw.isa import ErrorCode

__all__ = ["directed_commands"]


def directed_commands(config):
    """Hand-written commands with the code each must raise on ``config`` (the rules'
    independent check): one per rule and per error class, and valid ones at the limits."""
    c = config
    return [
        (0x9, ErrorCode.BAD_OPCODE),
        (0xF | (1 << 63), ErrorCode.BAD_OPCODE),
        (isa.Nop().encode() | (1 << 4), ErrorCode.RESERVED_BITS),
        (isa.Store(acc_addr=0, count=0, n=0).encode() | (1 << 63), ErrorCode.RESERVED_BITS),
        (isa.LoadParams(count=0).encode(), ErrorCode.ZERO_SIZE),
        (isa.LoadParams(count=c.cols + 1).encode(), ErrorCode.OVERSIZE),
        (isa.LoadParams(count=c.cols, param_set=1).encode(), ErrorCode.NONE),
        (isa.LoadAct(addr=0, count=0, length=1).encode(), ErrorCode.ZERO_SIZE),
        (isa.LoadAct(addr=0, count=1, length=0).encode(), ErrorCode.ZERO_SIZE),
        (isa.LoadAct(addr=0, count=1, length=c.rows + 1).encode(), ErrorCode.OVERSIZE),
        # Zero sizes come before oversize and address ranges.
        (isa.LoadAct(addr=c.act_depth, count=0, length=c.rows + 1).encode(),
         ErrorCode.ZERO_SIZE),
        (isa.LoadAct(addr=c.act_depth - 1, count=2, length=1).encode(), ErrorCode.ADDR_RANGE),
        (isa.LoadAct(addr=c.act_depth - 2, count=2, length=c.rows).encode(), ErrorCode.NONE),
        (isa.LoadWeight(slot=0, k=0, n=1).encode(), ErrorCode.ZERO_SIZE),
        (isa.LoadWeight(slot=0, k=1, n=0).encode(), ErrorCode.ZERO_SIZE),
        (isa.LoadWeight(slot=0, k=c.rows + 1, n=1).encode(), ErrorCode.OVERSIZE),
        (isa.LoadWeight(slot=0, k=1, n=c.cols + 1).encode(), ErrorCode.OVERSIZE),
        (isa.LoadWeight(slot=c.weight_tiles, k=c.rows + 1, n=1).encode(), ErrorCode.OVERSIZE),
        (isa.LoadWeight(slot=c.weight_tiles, k=1, n=1).encode(), ErrorCode.ADDR_RANGE),
        (isa.LoadWeight(slot=c.weight_tiles - 1, k=c.rows, n=c.cols).encode(), ErrorCode.NONE),
        (isa.Matmul(act_addr=0, count=0, slot=0, acc_addr=0).encode(), ErrorCode.ZERO_SIZE),
        (isa.Matmul(act_addr=c.act_depth, count=1, slot=0, acc_addr=0).encode(),
         ErrorCode.ADDR_RANGE),
        (isa.Matmul(act_addr=0, count=1, slot=0, acc_addr=c.acc_depth).encode(),
         ErrorCode.ADDR_RANGE),
        (isa.Matmul(act_addr=0, count=1, slot=c.weight_tiles, acc_addr=0).encode(),
         ErrorCode.ADDR_RANGE),
        (isa.Matmul(act_addr=c.act_depth - 1, count=1, slot=c.weight_tiles - 1,
                    acc_addr=c.acc_depth - 1, accumulate=1).encode(), ErrorCode.NONE),
        (isa.Store(acc_addr=0, count=0, n=1).encode(), ErrorCode.ZERO_SIZE),
        (isa.Store(acc_addr=0, count=1, n=0).encode(), ErrorCode.ZERO_SIZE),
        (isa.Store(acc_addr=0, count=1, n=c.cols + 1).encode(), ErrorCode.OVERSIZE),
        (isa.Store(acc_addr=c.acc_depth - 2, count=3, n=1).encode(), ErrorCode.ADDR_RANGE),
        (isa.Store(acc_addr=0, count=c.acc_depth, n=c.cols, raw=1).encode(), ErrorCode.NONE),
        (isa.ReadStatus().encode(), ErrorCode.NONE),
    ]


def _record(*, shift=30, reserved0=0, reserved1=0):
    """A 16-byte requantization record written by hand from ``docs/isa.md``: multiplier
    2**30 in bits [62:32], ``reserved0`` bit 63, ``shift`` bits [69:64], the clamp bounds
    -128 and 127 in bits [98:90] and [107:99], ``reserved1`` bits [127:108]."""
    word = (1 << 30) << 32 | reserved0 << 63 | shift << 64
    word |= (-128 & 0x1FF) << 90 | 127 << 99 | reserved1 << 108
    return word.to_bytes(16, "little")


def directed_records():
    """Hand-written requantization records with the code a ``LOAD_PARAMS`` of each must
    raise (the record rules' independent check)."""
    return [
        (_record(), ErrorCode.NONE),
        (_record(shift=63), ErrorCode.NONE),
        (_record(shift=1), ErrorCode.NONE),
        (_record(shift=0), ErrorCode.BAD_PARAM),
        (_record(reserved0=1), ErrorCode.BAD_PARAM),
        (_record(reserved1=1), ErrorCode.BAD_PARAM),
        (_record(reserved1=1 << 19), ErrorCode.BAD_PARAM),
        (_record(shift=0, reserved1=(1 << 20) - 1), ErrorCode.BAD_PARAM),
    ]


def directed_short_streams(config):
    """Hand-written streams whose data-in ends inside a command, with the status the
    waiting chip shows (``docs/isa.md``, "Data that ends early"): ``(label, commands,
    records or vectors as (count, bytes per vector) of each data command, beats to drop
    from the end, expected status)``.  The test fills in the data."""
    c = config
    params = isa.LoadParams(count=3)
    return [
        # The invalid second record arrived whole: BAD_PARAM latches while the chip waits
        # for the third; the NOP and the skipped STORE are consumed, READ_STATUS waits.
        ("invalid record, then the stream ends",
         [params, isa.Nop(), isa.Store(count=1, n=1), isa.ReadStatus(), isa.Nop()],
         [[_record(), _record(shift=0), _record()]], 1,
         isa.StatusRecord(error=ErrorCode.BAD_PARAM, error_opcode=isa.Opcode.LOAD_PARAMS,
                          commands=3)),
        # No invalid record: no error, the STORE waits behind the load.
        ("valid records, then the stream ends",
         [params, isa.Nop(), isa.Store(count=1, n=1), isa.Nop()],
         [[_record(), _record(shift=7), _record()]], 1, isa.StatusRecord(commands=2)),
        ("activations end mid-vector",
         [isa.LoadAct(addr=1, count=3, length=c.rows), isa.Matmul(count=2)],
         [(3, c.rows)], 1, isa.StatusRecord(commands=1)),
        ("weights end after a row",
         [isa.LoadWeight(slot=c.weight_tiles - 1, k=c.rows, n=c.cols), isa.Fence()],
         [(c.rows, c.cols)], c.beats(c.cols) * (c.rows - 1), isa.StatusRecord(commands=1)),
        ("no data at all", [isa.LoadAct(count=1, length=1), isa.ReadStatus()], [(1, 1)],
         c.beats(1), isa.StatusRecord(commands=1)),
    ]
