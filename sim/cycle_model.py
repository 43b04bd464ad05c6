"""Cycle model of the Npu: exact clock counts when no stream stalls.

The controller executes one command at a time: two cycles to fetch and dispatch,
then the unit's own sequence, then the datapath drains before the next fetch.
Each formula below follows the hardware's pipeline (see the unit docstrings) and
``tests/sim/test_cycle_model.py`` checks it against the RTL cycle counter.
With stalls on the streams the chip takes longer; these counts are then a lower
bound.
"""

from hw.config import PARAM_RECORD_BYTES, STATUS_RECORD_BYTES, NpuConfig
from hw.isa import Opcode
from hw.requantizer import STAGES as REQUANTIZER_STAGES

__all__ = ["FETCH_CYCLES", "command_cycles", "program_cycles", "matmul_overhead"]

#: FETCH and EXECUTE of the controller.
FETCH_CYCLES = 2
#: Deserializer request, and the write of the last vector after its last beat.
_LOAD_OVERHEAD = 2
#: Memory reader, requantizer pipeline and serializer register, plus the cycle in
#: which the datapath reports idle.
_STORE_OVERHEAD = REQUANTIZER_STAGES + 2


def matmul_overhead(config):
    """Cycles of a MATMUL that do not stream activations: weight preload, array
    latency and the reader/accumulator stages around them."""
    return config.rows + config.array_latency + 3


def command_cycles(instruction, config, *, executed=True):
    """Cycles one command takes on an unstalled chip.

    Parameters
    ----------
    instruction : hw.isa.Instruction
    config : NpuConfig
    executed : bool
        False when the command is malformed or skipped under a latched error:
        it is consumed in the fetch and dispatch cycles alone.
    """
    c = config
    if not executed:
        return FETCH_CYCLES
    op = instruction.OPCODE
    if op == Opcode.LOAD_ACT:
        unit = _LOAD_OVERHEAD + instruction.count * c.beats(instruction.length)
    elif op == Opcode.LOAD_WEIGHT:
        # Rows k..rows-1 of the tile are zeroed one per cycle without data.
        unit = (_LOAD_OVERHEAD + instruction.k * c.beats(instruction.n)
                + (c.rows - instruction.k))
    elif op == Opcode.LOAD_PARAMS:
        unit = _LOAD_OVERHEAD + instruction.count * c.beats(PARAM_RECORD_BYTES)
    elif op == Opcode.MATMUL:
        unit = matmul_overhead(c) + instruction.count
    elif op == Opcode.STORE:
        row_bytes = instruction.n * (4 if instruction.raw else 1)
        unit = _STORE_OVERHEAD + instruction.count * c.beats(row_bytes)
    elif op == Opcode.READ_STATUS:
        unit = c.beats(STATUS_RECORD_BYTES)
    else:  # NOP, FENCE, CLEAR_ERROR
        unit = 0
    return FETCH_CYCLES + unit


def program_cycles(commands, data_in=b"", config=None):
    """Cycles for a whole command stream on a freshly reset chip, without stalls.

    The golden model decides which commands execute (errors skip commands).
    """
    from sim.golden import GoldenNpu
    return GoldenNpu(config if config is not None else NpuConfig()).run(commands, data_in).cycles
