"""PNG plots: sensitivity curves per group, channels per layer before / after pruning, history per epoch.

Figures use matplotlib's Agg canvas directly (no pyplot, no global backend switch): plotting works
without a display and never changes the backend of a program that imports torchslim. matplotlib is
imported on first use, to keep ``import torchslim`` light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from torchslim.sensitivity.table import SensitivityTable


def _figure(width: float, height: float):
    """An empty figure on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def plot_sensitivities(
    table: SensitivityTable, path: str | Path, groups: Sequence[str] | None = None
) -> Path:
    """One line per group: relative metric loss (%) against the fraction of its channels removed."""
    names = [n for n in (groups or list(table.groups)) if table.groups.get(n)]
    figure = _figure(9, 5.5)
    axes = figure.add_subplot(1, 1, 1)
    colors = _colors(len(names))
    for name, color in zip(names, colors, strict=True):
        points = sorted((float(r), 100.0 * v["loss"]) for r, v in table.groups[name].items())
        axes.plot(
            [0.0] + [r for r, _ in points],
            [0.0] + [v for _, v in points],
            marker="o",
            markersize=3,
            linewidth=1.2,
            color=color,
            label=f"{name} ({table.sizes.get(name, '?')})",
        )
    axes.axhline(0.0, color="grey", linewidth=0.6)
    axes.set_xlabel("fraction of the group's channels removed (lowest-scored first)")
    axes.set_ylabel(f"relative {table.metric} loss (%)")
    base = "" if table.base_metric is None else f", base {table.base_metric:.2f}%"
    axes.set_title(
        f"{table.model}: sensitivity per group ({table.criterion}, {table.data}{base})", fontsize=10
    )
    axes.grid(True, linewidth=0.3)
    if names:
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(figure, path)


def plot_channels(
    before: Mapping[str, int], after: Mapping[str, int], path: str | Path, title: str = "channels per layer"
) -> Path:
    """Bars of the output channels of every layer before (light) and after (dark) pruning."""
    names = list(before)
    figure = _figure(max(6.0, 0.32 * len(names) + 2), 4.5)
    axes = figure.add_subplot(1, 1, 1)
    positions = range(len(names))
    axes.bar(
        [p - 0.2 for p in positions], [before[n] for n in names], width=0.4, color="#9ecae1", label="before"
    )
    axes.bar(
        [p + 0.2 for p in positions],
        [after.get(n, before[n]) for n in names],
        width=0.4,
        color="#08519c",
        label="after",
    )
    axes.set_xticks(list(positions))
    axes.set_xticklabels(names, rotation=75, ha="right", fontsize=7)
    axes.set_ylabel("output channels")
    axes.set_title(title, fontsize=10)
    axes.grid(True, axis="y", linewidth=0.3)
    axes.legend(fontsize=8, frameon=False)
    return _save(figure, path)


def _colors(count: int) -> list:
    from matplotlib import colormaps

    palette = colormaps["viridis" if count > 10 else "tab10"]
    return [palette(i / max(count - 1, 1)) if count > 10 else palette(i) for i in range(count)]


def plot_history(records: list[dict], path: str | Path, title: str = "") -> Path:
    """Two panels per epoch: accuracy (val top-1/top-5, train top-1) and loss (train, val)."""
    from matplotlib.ticker import MaxNLocator

    figure = _figure(10, 4)
    accuracy, loss = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for axes, keys, label in (
        (accuracy, ("top1", "top5", "train_top1"), "accuracy (%)"),
        (loss, ("train_loss", "val_loss"), "loss"),
    ):
        for key in keys:
            points = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
            if points:
                axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=key)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(label)
        axes.grid(True, linewidth=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8, frameon=False)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)
