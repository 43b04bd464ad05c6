"""``python -m bench`` — how fast the Npu is, and how fast it simulates.

Writes ``report.md``, ``results.json`` and PNG plots into ``--output``:

1. cycles and array utilization (useful MACs / (cycles x rows x cols)) of square and
   MLP-shaped GEMMs on 4x4, 8x8 and 16x16 arrays, from the cycle model replaying the
   command streams of the driver's lowering (:mod:`bench.gemms`);
2. the cycle model against the cycles the simulated RTL measures (:mod:`bench.simulators`);
3. SCALE-Sim's weight-stationary compute cycles for the same arrays and GEMMs
   (:mod:`bench.scalesim`);
4. simulation speed of Verilator, Icarus and Amaranth, and the golden model's wall time;
5. what the array does in every cycle of the overlapped schedule (streaming, or waiting
   and for what; :mod:`bench.activity`), weight tiles preloaded and reused, and
   utilization before and after the overlap, for a few GEMMs and the digits MLP of
   ``examples/digits``.

What runs is in :mod:`bench.plan`; :mod:`bench.report` and :mod:`bench.plots` write the
results, :mod:`bench.run` ties it together.  ``--quick`` runs a reduced set in well
under a minute (the tests use it).  ``python -m bench.demo`` runs one random GEMM on a
simulated chip.
"""
