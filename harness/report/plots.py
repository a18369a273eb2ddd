"""Figures for the reports, drawn with matplotlib (Agg) and returned as inline SVG strings.

Every function takes plain data (lists, dicts of numbers) and returns an SVG document as a str;
empty input gives a small "no data" figure rather than an error. The SVG is deterministic (fixed
hash salt, no date, no metadata, text kept as text) so a report renders byte-identically. Figures
are built as `matplotlib.figure.Figure` objects, never registered with pyplot, so nothing needs
closing and no global state changes: the style lives in an rc_context around each plot.
"""
from __future__ import annotations

import functools
import io
import math
import re
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogFormatter  # noqa: E402
from ..analysis.stats import wilson_interval  # noqa: E402

__all__ = ["rate_bars", "stacked_counts", "fraction_slower", "percentile_ladder", "box_plots",
           "forest", "scatter_ab", "curves", "bars_with_marks", "step_ecdf", "pareto", "heatmap", "no_data"]

STYLE = {
    "svg.hashsalt": "cdbench", "svg.fonttype": "none", "font.size": 9, "axes.titlesize": 10,
    "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "axes.axisbelow": True, "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial", "sans-serif"],
}
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf"]
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
WIDTH = 7.5  # inches


def _to_svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight",
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buf.getvalue()
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = re.sub(r"<!--.*?-->\s*", "", svg, flags=re.S)
    return svg


def _svg_plot(fn: Callable[..., str]) -> Callable[..., str]:
    """Run a plotting function under the report style (rcParams restored afterwards)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


def _figure(height: float, width: float = WIDTH) -> Figure:
    return Figure(figsize=(width, height))  # no layout engine: the tight bbox at save time is enough


def _empty(title: str, message: str = "no data") -> Figure:
    fig = _figure(1.0, 4.0)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, f"{title}: {message}" if title else message, ha="center", va="center", color="#59636e")
    return fig


@_svg_plot
def no_data(title: str = "", message: str = "no data") -> str:
    """A small figure saying there is nothing to plot."""
    return _to_svg(_empty(title, message))


def _positive(values: list[float] | np.ndarray) -> np.ndarray:
    a = np.asarray([v for v in values if v is not None], dtype=float)
    return a[np.isfinite(a) & (a > 0)]


def _label(text: Any) -> str:
    """User text (a task id, a group) as a matplotlib label: a `$` would start mathtext."""
    return str(text).replace("$", r"\$")


def _legend_outside(ax: Any, n: int) -> None:
    if n > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _tick_labels(ax: Any, labels: list[str], axis: str = "x", offset: float = 0.0) -> None:
    labels = [_label(s) for s in labels]
    longest = max((len(s) for s in labels), default=0)
    rotate = axis == "x" and longest * len(labels) > 80
    pos = np.arange(len(labels)) + offset
    if axis == "x":
        ax.set_xticks(pos, labels, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    else:
        ax.set_yticks(pos, labels)


@_svg_plot
def rate_bars(groups: list[str], series: dict[str, list[tuple[int, int]]], title: str = "Rates with Wilson 95% intervals",
              ylabel: str = "proportion") -> str:
    """Grouped bars of proportions k/n: one group per `groups` entry (e.g. declared coverage,
    empirical coverage, compliance), one bar per series (e.g. engine/sampler), Wilson 95% error bars."""
    if not groups or not series:
        return _to_svg(_empty(title))
    fig = _figure(3.2)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for j, (name, counts) in enumerate(series.items()):
        props = [k / n if n else math.nan for k, n in counts]
        cis = [wilson_interval(k, n) for k, n in counts]
        err = np.array([[p - lo for p, (lo, _) in zip(props, cis)], [hi - p for p, (_, hi) in zip(props, cis)]])
        x = np.arange(len(groups)) + (j - (len(series) - 1) / 2) * width
        ax.bar(x, props, width * 0.92, yerr=np.nan_to_num(err), capsize=3, label=name, color=COLORS[j % 10],
               error_kw={"elinewidth": 1, "ecolor": "#333"})
    _tick_labels(ax, groups)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _legend_outside(ax, len(series))
    return _to_svg(fig)


@_svg_plot
def stacked_counts(groups: list[str], categories: list[str], counts: dict[str, dict[str, int]],
                   title: str = "Counts") -> str:
    """Horizontal stacked bars: one bar per group, one segment per category (categories that never
    occur are left out of the legend)."""
    used = [c for c in categories if any(counts.get(g, {}).get(c, 0) for g in groups)]
    if not groups or not used:
        return _to_svg(_empty(title))
    fig = _figure(0.9 + 0.38 * len(groups))
    ax = fig.add_subplot()
    left = np.zeros(len(groups))
    for j, cat in enumerate(used):
        vals = np.array([counts.get(g, {}).get(cat, 0) for g in groups], dtype=float)
        bars = ax.barh(np.arange(len(groups)), vals, left=left, label=cat, color=COLORS[j % 10], height=0.7)
        ax.bar_label(bars, labels=[str(int(v)) if v else "" for v in vals], label_type="center", fontsize=7,
                     color="white")
        left += vals
    _tick_labels(ax, groups, axis="y")
    ax.invert_yaxis()
    ax.set_xlabel("cases")
    ax.set_title(title)
    ax.grid(axis="y", visible=False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _to_svg(fig)


_PLAIN = FuncFormatter(lambda v, _pos: f"{v:g}")  # 0.01, 10, 1000 rather than 10^k


class _PlainMinor(LogFormatter):
    """Minor ticks of a log axis labelled as plain numbers (20, 50 rather than 2×10^1), and only
    when the axis spans at most two decades (matplotlib's choice of which ones)."""

    def __init__(self) -> None:
        super().__init__(labelOnlyBase=False, minor_thresholds=(2, 0.5))

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:g}"


def _plain_log(axis: Any) -> None:
    axis.set_major_formatter(_PLAIN)
    axis.set_minor_formatter(_PlainMinor())


def _log_axes(ax: Any, x: bool = True, y: bool = True) -> None:
    if x:
        ax.set_xscale("log")
        _plain_log(ax.xaxis)
    if y:
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
    ax.grid(True, which="major", alpha=0.35)


@_svg_plot
def fraction_slower(series: dict[str, list[float]], unit: str, title: str = "Fraction slower than t") -> str:
    """For each series, the fraction of values greater than or equal to t, against t (log-log): the
    further right a curve's tail reaches, the slower its worst cases."""
    data = {name: np.sort(_positive(v)) for name, v in series.items()}
    data = {name: v for name, v in data.items() if v.size}
    if not data:
        return _to_svg(_empty(title))
    fig = _figure(3.2)
    ax = fig.add_subplot()
    for j, (name, v) in enumerate(data.items()):
        frac = (v.size - np.arange(v.size)) / v.size
        ax.step(v, frac, where="post", label=f"{name} (n={v.size})", color=COLORS[j % 10], linewidth=1.4)
    _log_axes(ax)
    ax.set_xlabel(f"t ({unit})")
    ax.set_ylabel("fraction of values ≥ t")
    ax.set_title(title)
    _legend_outside(ax, 2)
    return _to_svg(fig)


def _ladder_values(data: dict[str, np.ndarray]) -> np.ndarray:
    return np.array([[np.percentile(v, q) for q in PERCENTILES] for v in data.values()])


@_svg_plot
def percentile_ladder(series: dict[str, list[float]], unit: str, title: str = "Percentile ladder") -> str:
    """p50, p90, p99 and p99.9 of each series as grouped bars on a log axis, each bar annotated with
    how many times the fastest series at that percentile it is."""
    data = {name: _positive(v) for name, v in series.items()}
    data = {name: v for name, v in data.items() if v.size}
    if not data:
        return _to_svg(_empty(title))
    vals = _ladder_values(data)
    fig = _figure(3.4)
    ax = fig.add_subplot()
    width = 0.8 / len(data)
    fastest = vals.min(axis=0)
    for j, name in enumerate(data):
        x = np.arange(len(PERCENTILES)) + (j - (len(data) - 1) / 2) * width
        bars = ax.bar(x, vals[j], width * 0.92, label=name, color=COLORS[j % 10])
        notes = ["fastest" if v == f else f"{v / f:.1f}×" for v, f in zip(vals[j], fastest)]
        ax.bar_label(bars, labels=notes, fontsize=7, padding=2, rotation=90 if len(data) > 3 else 0)
    ax.set_yscale("log")
    _plain_log(ax.yaxis)
    ax.set_ylim(vals.min() / 2, vals.max() * (6 if len(data) > 3 else 3))
    _tick_labels(ax, [f"p{q:g}" for q in PERCENTILES])
    ax.set_ylabel(unit)
    ax.set_title(title)
    _legend_outside(ax, 2)
    return _to_svg(fig)


@_svg_plot
def box_plots(series: dict[str, list[float]], unit: str, title: str = "Distribution") -> str:
    """One box per series (median, quartiles, whiskers at 1.5 IQR, outliers as dots); log axis when
    the values span more than two decades."""
    data = {name: _positive(v) for name, v in series.items()}
    data = {name: v for name, v in data.items() if v.size}
    if not data:
        return _to_svg(_empty(title))
    fig = _figure(3.2, min(WIDTH, 2.5 + 1.1 * len(data)))
    ax = fig.add_subplot()
    ax.boxplot(list(data.values()), widths=0.5, medianprops={"color": "#d62728"},
               flierprops={"markersize": 2.5, "alpha": 0.5})
    ax.set_xticks(np.arange(1, len(data) + 1), [f"{k}\n(n={v.size})" for k, v in data.items()])
    everything = np.concatenate(list(data.values()))
    if everything.max() / everything.min() > 100:
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
    ax.set_ylabel(unit)
    ax.set_title(title)
    return _to_svg(fig)


@_svg_plot
def forest(labels: list[str], ratios: list[float], lows: list[float], highs: list[float], threshold: float,
           title: str = "Ratios with intervals") -> str:
    """One point per metric: the ratio with its interval on a log x axis, a line at 1 and the band
    [1/threshold, threshold] shaded (differences inside it are treated as negligible)."""
    keep = [i for i in range(len(labels)) if all(_ok_pos(v[i]) for v in (ratios, lows, highs))]
    if not keep:
        return _to_svg(_empty(title))
    fig = _figure(1.0 + 0.32 * len(keep))
    ax = fig.add_subplot()
    y = np.arange(len(keep))
    r = np.array([ratios[i] for i in keep])
    err = np.array([[r[n] - lows[i] for n, i in enumerate(keep)], [highs[i] - r[n] for n, i in enumerate(keep)]])
    ax.axvspan(1 / threshold, threshold, color="#2ca02c", alpha=0.12, label=f"within ×{threshold:g}")
    ax.axvline(1.0, color="#333", linewidth=1)
    ax.errorbar(r, y, xerr=np.clip(err, 0, None), fmt="o", color="#1f77b4", capsize=3, markersize=4)
    ax.set_yticks(y, [labels[i] for i in keep])
    ax.invert_yaxis()
    ax.set_xscale("log")
    _plain_log(ax.xaxis)
    lo, hi = min(min(lows[i] for i in keep), 1 / threshold), max(max(highs[i] for i in keep), threshold)
    ax.set_xlim(lo / 1.3, hi * 1.3)
    ax.set_xlabel("ratio (log scale)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _to_svg(fig)


def _ok_pos(v: float | None) -> bool:
    return v is not None and math.isfinite(v) and v > 0


@_svg_plot
def scatter_ab(x: list[float], y: list[float], unit: str, title: str = "A vs B",
               labels: tuple[str, str] = ("A", "B"), factor: float | None = None,
               groups: list[str] | None = None) -> str:
    """Per-case values of A (x) against B (y) on log-log axes with the diagonal y = x: points above
    it are slower under B. With `factor`, the band [x / factor, x * factor] is shaded and the cases
    outside it are counted in the legend; with `groups` (one label per point), one colour per group.
    Each group's points are an SVG group with id "cases-<j>" (values that are not positive are left
    out: a log axis cannot show them)."""
    names = list(groups) if groups is not None else [""] * len(x)
    keep = [(a, b, g) for a, b, g in zip(x, y, names) if _ok_pos(a) and _ok_pos(b)]
    if not keep:
        return _to_svg(_empty(title))
    pairs = np.array([(a, b) for a, b, _ in keep], dtype=float)
    fig = _figure(4.2, 4.8)
    ax = fig.add_subplot()
    lo, hi = pairs.min() / 1.5, pairs.max() * 1.5
    if factor and factor > 1:
        lo, hi = min(lo, pairs.min() / factor / 1.2), max(hi, pairs.max() * factor * 1.2)
        above = int(np.sum(pairs[:, 1] > pairs[:, 0] * factor))
        below = int(np.sum(pairs[:, 1] < pairs[:, 0] / factor))
        edge = np.array([lo, hi])
        ax.fill_between(edge, edge / factor, edge * factor, color="#2ca02c", alpha=0.12, linewidth=0,
                        label=f"within ×{factor:g} ({above} above, {below} below)")
    ax.plot([lo, hi], [lo, hi], color="#888", linewidth=1, linestyle="--", label="y = x")
    order = list(dict.fromkeys(g for _, _, g in keep))
    for j, name in enumerate(order):
        pts = np.array([(a, b) for a, b, g in keep if g == name], dtype=float)
        label = f"{_label(name)} (n={len(pts)})" if name else f"cases (n={len(pts)})"
        ax.scatter(pts[:, 0], pts[:, 1], s=16, alpha=0.75, color=COLORS[j % 10], label=label, gid=f"cases-{j}",
                   linewidths=0)
    _log_axes(ax)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"{labels[0]} ({unit})")
    ax.set_ylabel(f"{labels[1]} ({unit})")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)  # outside: never over a point
    return _to_svg(fig)


@_svg_plot
def curves(series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str, title: str = "",
           logx: bool = True, logy: bool = False, reference: tuple[float, str] | None = None) -> str:
    """One line with markers per series (x values, y values), e.g. a convergence curve per task;
    each line is an SVG group with id "curve-<j>". A log axis drops the points it cannot show.
    `reference`: (y, label) drawn as a dashed horizontal line (the target a curve should reach)."""
    data = {}
    for name, (xs, ys) in series.items():
        pts = [(float(a), float(b)) for a, b in zip(xs, ys) if a is not None and b is not None
               and math.isfinite(a) and math.isfinite(b) and (a > 0 or not logx) and (b > 0 or not logy)]
        if pts:
            data[name] = np.array(pts)
    if not data:
        return _to_svg(_empty(title))
    fig = _figure(3.4)
    ax = fig.add_subplot()
    if reference is not None:
        ax.axhline(reference[0], color="#333", linewidth=1, linestyle="--", label=reference[1])
    for j, (name, pts) in enumerate(data.items()):
        ax.plot(pts[:, 0], pts[:, 1], marker="o", markersize=3, linewidth=1.4, color=COLORS[j % 10],
                label=_label(name), gid=f"curve-{j}")
    _log_axes(ax, x=logx, y=logy)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _to_svg(fig)


@_svg_plot
def bars_with_marks(groups: list[str], series: dict[str, list[float | None]],
                    marks: dict[str, list[float | None]] | None = None, ylabel: str = "", title: str = "",
                    mark_label: str = "") -> str:
    """Grouped bars (one group per `groups` entry, one bar per series; None = no bar), each bar with an
    optional black tick at its `marks` value (a reference such as the null band's p95)."""
    ok = lambda v: v is not None and math.isfinite(v)  # noqa: E731
    if not groups or not any(ok(v) for vs in series.values() for v in vs):
        return _to_svg(_empty(title))
    fig = _figure(3.4)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    marked = False
    for j, (name, values) in enumerate(series.items()):
        x = np.arange(len(groups)) + (j - (len(series) - 1) / 2) * width
        heights = [v if ok(v) else 0.0 for v in values]
        ax.bar(x, heights, width * 0.9, label=_label(name), color=COLORS[j % 10])
        for xi, m in zip(x, (marks or {}).get(name, [])):
            if ok(m):
                ax.hlines(m, xi - width * 0.45, xi + width * 0.45, color="black", linewidth=1.6,
                          label=None if marked else mark_label)
                marked = True
    _tick_labels(ax, groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _to_svg(fig)


def _count(v: float) -> str:
    """A count or mean count: 2.5, 37.2, 1,234, 262,144."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


@_svg_plot
def step_ecdf(series: dict[str, list[float]], unit: str = "evaluations",
              title: str = "Constraint evaluations per step") -> str:
    """The fraction of steps with at most x (`unit`) per series: an ECDF, log x when the values span
    more than a decade; each legend entry notes the mean, p99 and the share of steps at 0 (which a
    log axis cannot place: the curve starts at that share), and a triangle marks each p99. Each
    series is a group "ecdf-<j>"."""
    data = {name: np.sort(np.asarray([v for v in vs if v is not None], dtype=float)) for name, vs in series.items()}
    data = {name: v for name, v in data.items() if v.size}
    if not data:
        return _to_svg(_empty(title))
    everything = np.concatenate(list(data.values()))
    pos = everything[everything > 0]
    logx = pos.size > 0 and pos.max() / pos.min() > 10
    left, right = (pos.min() / 1.5, pos.max() * 1.5) if logx else (everything.min(), everything.max())
    if not logx:
        pad = (right - left) * 0.05 or 0.5
        left, right = left - pad, right + pad
    fig = _figure(3.4)
    ax = fig.add_subplot()
    for j, (name, v) in enumerate(data.items()):
        frac = np.arange(1, v.size + 1) / v.size
        zero = float(np.mean(v <= 0))
        p99 = float(np.percentile(v, 99))
        label = f"{_label(name)}: mean {_count(v.mean())}, p99 {_count(p99)}, n={v.size:,} steps"
        if zero:
            label += f", {zero:.0%} at 0"
        shown = v > 0 if logx else np.ones(v.size, bool)
        # from the left edge at the share of steps left of the axis (0 on a linear axis, the zeros on a log one)
        xs = np.concatenate([[left], v[shown], [right]])
        ys = np.concatenate([[zero if logx else 0.0], frac[shown], [1.0]])
        ax.step(xs, ys, where="post", color=COLORS[j % 10], linewidth=1.5, label=label, gid=f"ecdf-{j}")
        if p99 > 0 or not logx:
            ax.plot([p99], [0.99], marker="v", markersize=6, color=COLORS[j % 10], linestyle="none")
    if logx:
        _log_axes(ax, y=False)
    ax.set_xlim(left, right)
    ax.set_ylim(0, 1.03)
    ax.set_xlabel(f"{unit} per step" + (" (log scale)" if logx else ""))
    ax.set_ylabel("fraction of steps ≤ x")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, ncol=1)
    return _to_svg(fig)


def _frontier(pts: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """Points no other point beats on both axes (lower x and higher y), by increasing x."""
    best, out = -math.inf, []
    for p in sorted(pts, key=lambda p: (p[1], -p[2])):
        if p[2] > best:
            out.append(p)
            best = p[2]
    return out


@_svg_plot
def pareto(points: list[tuple[str, float, float]], xlabel: str, ylabel: str, title: str = "Trade-off") -> str:
    """Labelled points (lower x and higher y are better, e.g. mask p99 vs compliance) with the
    Pareto frontier drawn through the points that nothing dominates; log x when x spans a decade."""
    pts = [(str(lab), float(x), float(y)) for lab, x, y in points
           if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    if not pts:
        return _to_svg(_empty(title))
    fig = _figure(3.4, 6.0)
    ax = fig.add_subplot()
    front = _frontier(pts)
    ax.plot([p[1] for p in front], [p[2] for p in front], color="#2ca02c", linewidth=1, alpha=0.7,
            drawstyle="steps-post", label="Pareto frontier")
    for j, (lab, x, y) in enumerate(pts):
        ax.scatter([x], [y], s=28, color=COLORS[j % 10], zorder=3)
        ax.annotate(lab, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    xs = [p[1] for p in pts]
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
        _plain_log(ax.xaxis)
    ax.margins(x=0.25, y=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="lower right", frameon=False)
    return _to_svg(fig)


@_svg_plot
def heatmap(rows: list[str], cols: list[str], values: list[list[float | None]], title: str = "",
            fmt: str = "{:.2f}", vmin: float | None = None, vmax: float | None = None) -> str:
    """A rows × cols grid of numbers, each cell annotated with `fmt`; None is a blank cell "n/a"."""
    grid = np.array([[math.nan if v is None else float(v) for v in r] for r in values], dtype=float)
    if not rows or not cols or grid.size == 0 or np.isnan(grid).all():
        return _to_svg(_empty(title))
    fig = _figure(max(2.2, 1.2 + 0.3 * len(rows)), min(WIDTH, 3.2 + 1.0 * len(cols) + 0.05 * max(map(len, rows))))
    ax = fig.add_subplot()
    image = ax.pcolormesh(np.ma.masked_invalid(grid), cmap="viridis", vmin=vmin, vmax=vmax,
                          edgecolors="white", linewidth=0.5)  # vector cells, unlike imshow's embedded PNG
    lo, hi = image.get_clim()
    for (i, j), v in np.ndenumerate(grid):
        dark = not math.isnan(v) and (v - lo) < 0.6 * (hi - lo if hi > lo else 1)
        ax.text(j + 0.5, i + 0.5, "n/a" if math.isnan(v) else fmt.format(v), ha="center", va="center", fontsize=8,
                color="white" if dark else "black" if not math.isnan(v) else "#888")
    _tick_labels(ax, cols, offset=0.5)
    _tick_labels(ax, rows, axis="y", offset=0.5)
    ax.invert_yaxis()
    ax.grid(False)
    ax.set_title(title)
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.solids.set_rasterized(False)  # keep the colour bar vector too: no embedded image
    return _to_svg(fig)
