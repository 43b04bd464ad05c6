"""Section 3: SCALE-Sim's weight-stationary compute cycles next to ours for the same GEMMs."""

import contextlib
import io
import math
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from hw.config import NpuConfig

from .gemms import replay_gemm, utilization
from .plan import GEMM_SCHEDULE_CYCLES, array_name

__all__ = ["scalesim_problem", "run_scalesim", "scalesim_comparison"]

_SCALESIM_CONFIG = """\
[general]
run_name = npu

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: {ifmap_kb}
FilterSramSzkB: {filter_kb}
OfmapSramSzkB: {ofmap_kb}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth: 10
Dataflow: ws
MemoryBanks: 1
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 1
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 1
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""


def _scalar_max(*values):
    """``max`` that returns a NumPy scalar even for a list of one-element arrays."""
    return np.max(values[0] if len(values) == 1 else values)


def _scalesim_array(rows, cols, gemms, workdir):
    """Run SCALE-Sim once for one array size; a worker process, so its globals stay there.

    Returns ``[(compute cycles, cycles incl. prefetch, stall cycles), ...]`` per GEMM.
    """
    from scalesim.memory import double_buffered_scratchpad_mem
    from scalesim.scale_sim import scalesim
    # SCALE-Sim 3.0.0 takes int() of max() over one-element arrays, which NumPy 2.4
    # refuses (scalesim-project/SCALE-Sim#160); the same values as scalars fix it.
    double_buffered_scratchpad_mem.max = _scalar_max
    config = NpuConfig(rows=rows, cols=cols)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # The SRAMs as large as the Npu's buffers; in CALC bandwidth mode they do not
    # change the compute cycles.
    (workdir / "npu.cfg").write_text(_SCALESIM_CONFIG.format(
        rows=rows, cols=cols, ifmap_kb=max(1, config.act_depth * rows // 1024),
        filter_kb=max(1, config.weight_depth * cols // 1024),
        ofmap_kb=max(1, config.acc_depth * cols * 4 // 1024)))
    # SCALE-Sim's GEMM topology: M rows of the input, N filters, K-long dot products.
    (workdir / "gemms.csv").write_text("Layer,M,N,K,\n" + "".join(
        f"gemm{i},{g.m},{g.n},{g.k},\n" for i, g in enumerate(gemms)))
    # It reads a layout file even when custom layouts are off; a header suffices.
    (workdir / "layout.csv").write_text("Layer,\n")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        sim = scalesim(save_disk_space=True, verbose=False, config=str(workdir / "npu.cfg"),
                       topology=str(workdir / "gemms.csv"),
                       layout=str(workdir / "layout.csv"), input_type_gemm=True)
        sim.run_scale(top_path=str(workdir / "out"))
    results = []
    for layer in sim.runner.single_layer_sim_object_list:
        with_prefetch, compute, stalls, *_ = layer.get_compute_report_items()
        results.append((int(compute), int(with_prefetch), int(stalls)))
    return results


def run_scalesim(cases, workdir, *, workers=2):
    """SCALE-Sim (weight-stationary) compute cycles for ``(rows, cols, Gemm)`` cases.

    Parameters
    ----------
    cases : sequence of (int, int, Gemm)
    workdir : path-like
        Where SCALE-Sim's input and report files go.
    workers : int
        Array sizes simulated in parallel (SCALE-Sim is single-threaded Python).

    Returns
    -------
    dict
        ``(rows, cols, Gemm)`` -> ``(compute cycles, cycles incl. prefetch, stall cycles)``.
    """
    by_array = {}
    for rows, cols, gemm in cases:
        by_array.setdefault((rows, cols), []).append(gemm)
    # spawn: the parent holds threads (rich's progress display) that fork would copy.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {array: pool.submit(_scalesim_array, *array, gemms,
                                      Path(workdir) / f"{array[0]}x{array[1]}")
                   for array, gemms in by_array.items()}
        return {(*array, gemm): result
                for array, future in futures.items()
                for gemm, result in zip(by_array[array], future.result(), strict=True)}


def scalesim_problem():
    """Why SCALE-Sim cannot run here, or None."""
    try:
        import scalesim  # noqa: F401
    except ImportError:
        return "the `scalesim` package is not installed (`pip install -e '.[bench]'`)"
    return None


def scalesim_comparison(plan, workdir):
    """Section 3: SCALE-Sim's compute cycles next to ours for the same GEMMs."""
    measured = run_scalesim(plan.scalesim, workdir)
    rows = []
    for (array_rows, array_cols, gemm), (compute, with_prefetch, stalls) in measured.items():
        config = NpuConfig(rows=array_rows, cols=array_cols)
        ours = replay_gemm(config, gemm)
        # SCALE-Sim maps each rows x cols weight tile once ("fold") and streams all M rows.
        folds = math.ceil(gemm.k / array_rows) * math.ceil(gemm.n / array_cols)
        rows.append({
            "array": array_name(config), "gemm": str(gemm), "m": gemm.m, "k": gemm.k,
            "n": gemm.n, "scalesim_compute_cycles": compute,
            "scalesim_cycles_with_prefetch": with_prefetch, "scalesim_stall_cycles": stalls,
            "scalesim_utilization": utilization(config, gemm.macs, compute),
            "scalesim_folds": folds,
            "scalesim_formula": folds * (2 * array_rows + array_cols + gemm.m - 2) - 1,
            "our_weight_tiles": ours["matmuls"],
            "our_streaming_cycles": ours["parts"]["streaming"],
            "our_cycles": ours["cycles"],
            "our_schedule_cycles": GEMM_SCHEDULE_CYCLES.get(array_name(config), {}).get(str(gemm)),
            "our_utilization": utilization(config, gemm.macs, ours["cycles"])})
    return rows
