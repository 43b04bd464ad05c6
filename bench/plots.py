"""The benchmark's PNG plots."""

import contextlib
import textwrap

import numpy as np

from .activity import ACTIVITIES
from .plan import DEFAULT_CONFIG, array_name

__all__ = ["plot_utilization", "plot_scalesim", "plot_speed", "plot_activity"]

@contextlib.contextmanager
def _figure(path, figsize, ncols=1, **options):
    """Axes of a new figure that is laid out, written to ``path`` (PNG) and closed on exit."""
    import matplotlib
    matplotlib.use("Agg")  # files only: benchmarks run without a display
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=figsize, **options)
    try:
        yield axes
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def plot_utilization(sweep, path):
    """Utilization of the square GEMMs against size, and of MLP layers against batch."""
    with _figure(path, (12, 4.5), ncols=2) as (squares, layers):
        for array in dict.fromkeys(row["array"] for row in sweep):
            points = [r for r in sweep if r["array"] == array and r["family"] == "square"]
            squares.plot([r["m"] for r in points], [100 * r["utilization"] for r in points],
                         marker="o", label=f"{array} array")
        squares.set(xscale="log", xlabel="M = K = N", ylabel="array utilization (%)",
                    title="square GEMMs", ylim=(0, 100))
        squares.set_xticks([r["m"] for r in sweep if r["family"] == "square"],
                           labels=[str(r["m"]) for r in sweep if r["family"] == "square"])
        squares.minorticks_off()
        squares.legend()
        styles = {"4x4": ":", "8x8": "-", "16x16": "--"}
        widths = dict.fromkeys(row["k"] for row in sweep if row["family"] == "mlp")
        colours = {width: f"C{i}" for i, width in enumerate(widths)}
        for array in dict.fromkeys(row["array"] for row in sweep):
            for width, colour in colours.items():
                points = [r for r in sweep if r["array"] == array and r["family"] == "mlp"
                          and r["k"] == width]
                layers.plot([r["m"] for r in points], [100 * r["utilization"] for r in points],
                            linestyle=styles.get(array, "-"), color=colour, marker=".",
                            label=f"{width}->{width}, {array}")
        layers.set(xscale="log", xlabel="batch (M)", ylabel="array utilization (%)",
                   title="MLP layers K = N (colour) on each array (line style)", ylim=(0, 100))
        layers.legend(fontsize="x-small", ncol=3)


def plot_scalesim(rows, path):
    """SCALE-Sim's compute cycles next to our streaming and whole-layer cycles."""
    with _figure(path, (max(7, 0.9 * len(rows)), 4.5)) as ax:
        x = np.arange(len(rows))
        series = [("SCALE-Sim compute (ws)", "scalesim_compute_cycles"),
                  ("ours: array streaming", "our_streaming_cycles"),
                  ("ours: whole layer", "our_cycles")]
        for i, (label, key) in enumerate(series):
            ax.bar(x + (i - 1) * 0.27, [r[key] for r in rows], width=0.27, label=label)
        ax.set_xticks(x, [f"{r['array']}\n{r['gemm']}" for r in rows], fontsize="small")
        ax.set(yscale="log", ylabel="cycles", title="SCALE-Sim and the Npu's cycle model")
        ax.legend()


def plot_speed(speed, golden, path):
    """Simulated cycles per wall-clock second of every simulator and the golden model."""
    ran = [s for s in speed if s["available"]]
    names = [s["backend"] for s in ran] + ["golden model"]
    rates = [s["cycles_per_second"] for s in ran] + [golden["cycles_per_second"]]
    with _figure(path, (7, 3.2)) as ax:
        ax.barh(names, rates, color=[f"C{i}" for i in range(len(names))])
        for y, rate in enumerate(rates):
            ax.text(rate, y, f" {rate:,.0f}", va="center", fontsize="small")
        ax.set(xscale="log", xlabel="simulated cycles per wall-clock second",
               title=f"simulation speed ({array_name(DEFAULT_CONFIG)} array)",
               xlim=(None, 5 * max(rates)))  # room for the labels right of the bars
        ax.invert_yaxis()


def plot_activity(rows, path):
    """Each workload's cycles stacked by :data:`ACTIVITIES`, and utilization before and
    after the overlap."""
    def label(row):
        return textwrap.fill(row["workload"].split(",")[0], 12)

    with _figure(path, (12, 6), ncols=2, width_ratios=(3, 2)) as (shares, before_after):
        x = np.arange(len(rows))
        bottom = np.zeros(len(rows))
        for i, (activity, text) in enumerate(ACTIVITIES.items()):
            share = np.array([100 * r["parts"][activity] / r["cycles"] for r in rows])
            shares.bar(x, share, bottom=bottom, label=f"{activity}: {text}", color=f"C{i}")
            bottom += share
        shares.set_xticks(x, [f"{label(r)}\n{r['cycles']:,} cycles" for r in rows],
                          fontsize="x-small")
        shares.set(ylabel="share of cycles (%)", ylim=(0, 100),
                   title=f"what the array does ({rows[0]['array']} array)")
        shares.legend(bbox_to_anchor=(0.5, -0.2), loc="upper center", ncol=2,
                      fontsize="x-small")
        compared = [r for r in rows if r["previous_cycles"]]
        x = np.arange(len(compared))
        series = [(-0.2, "one command at a time", "previous_utilization"),
                  (0.2, "overlapped", "utilization")]
        for offset, text, key in series:
            bars = before_after.bar(x + offset, [100 * r[key] for r in compared], width=0.4,
                                    label=text)
            before_after.bar_label(bars, fmt="%.0f", fontsize="x-small")
        before_after.set_xticks(x, [label(r) for r in compared], fontsize="x-small")
        before_after.set(ylabel="array utilization (%)", ylim=(0, 100),
                         title="before and after the overlap")
        before_after.legend(fontsize="small")


