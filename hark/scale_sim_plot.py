"""The PNG of ``hark scale-sim``: one column per pack, rows for pods and capacity, queue depth and queue wait."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol


class PackSeries(Protocol):
    """Per-second series of one pack (:class:`hark.scale_sim.PackSeries`)."""

    pods: list[int]
    capacity: list[int]
    queue_depth: list[int]
    wait: list[float]


class PackModel(Protocol):
    """The pack's model numbers shown in the titles (:class:`hark.scale_sim.PackModel`)."""

    @property
    def service_seconds(self) -> float: ...

    @property
    def lanes(self) -> int: ...

    @property
    def target(self) -> float: ...


def plot(results: Mapping[str, PackSeries], models: Mapping[str, PackModel], out: Path, title: str = "") -> None:
    """Render `results` into the PNG `out` (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    packs = list(results)
    figure, axes = plt.subplots(3, len(packs), figsize=(6 * len(packs), 8), sharex=True, squeeze=False)
    for column, pack in enumerate(packs):
        series, model = results[pack], models[pack]
        seconds = range(len(series.pods))
        top, middle, bottom = axes[0][column], axes[1][column], axes[2][column]
        top.step(seconds, series.pods, where="post", color="tab:blue", label="pods (HPA)")
        top.set_ylabel("pods")
        top.set_title(f"pack {pack}: {model.service_seconds:g} s/job, {model.lanes} lanes/pod, "
                      f"target {model.target:g}/pod")  # fmt: skip
        twin = top.twinx()
        twin.step(seconds, series.capacity, where="post", color="tab:orange", label="capacity (all pods)")
        twin.set_ylabel("capacity")
        lines = top.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        top.legend(lines, [line.get_label() for line in lines], loc="upper right", fontsize="small")
        middle.plot(seconds, series.queue_depth, color="tab:red")
        middle.set_ylabel("queue depth (jobs)")
        bottom.plot(seconds, series.wait, color="tab:green", marker=".", markersize=2, linestyle="none")
        bottom.set_ylabel("queue wait (s)")
        bottom.set_xlabel("time (s)")
        for axis in (top, middle, bottom):
            axis.grid(alpha=0.3)
    figure.suptitle(f"hark scale-sim {title}: each pack scales on its own queue and pods")
    figure.subplots_adjust(left=0.07, right=0.93, top=0.9, bottom=0.07, hspace=0.12, wspace=0.35)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    plt.close(figure)
