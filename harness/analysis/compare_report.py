"""compare.md (a pull-request comment or $GITHUB_STEP_SUMMARY), compare.json and compare.html."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..report.page import Figure, KeyValues, Page, Table, Text, render_page
from ..report.plots import forest, scatter_ab
from ..reporting.markdown import row as md_row
from ..results.metrics import METRICS
from .compare import Check, Comparison

MARKS = "`+` worse, `-` better (past the threshold, significant after Benjamini-Hochberg, and the statistic's " \
        "interval excludes no change), " \
        "`~` past the threshold but not significant, `x` not comparable, `!` case got worse, `*` case got better"


def _num(v: float | None, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if unit == "":
        return f"{v:.3f}"
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"


def _change(c: Check) -> str:
    if c.change is None or c.change != c.change:
        return "n/a"
    if c.relative:
        return f"x{c.change:.3f} ({_num(c.low)}–{_num(c.high)})".replace("n/a", "?")
    return f"{c.change:+.3f} ({c.low:+.3f}–{c.high:+.3f})" if c.low == c.low and c.low is not None else f"{c.change:+.3f}"


def _side(c: Check, value: float | None, ci: tuple[float, float] | None) -> str:
    text = _num(value, c.unit)
    if ci and ci[0] == ci[0]:
        text += f" ({ci[0]:.3f}–{ci[1]:.3f})"
    return text


def _p(c: Check) -> str:
    if c.p is None:
        return "n/a"
    note = " low power" if c.low_power else ""
    return f"{c.p:.3g} / {c.p_adjusted:.3g}{note}" if c.p_adjusted is not None else f"{c.p:.3g}{note}"


def check_rows(comp: Comparison) -> list[list[str]]:
    return [[c.mark, c.group, c.statistic + (f" ({c.unit})" if c.unit else ""), _side(c, c.base, c.base_ci),
             _side(c, c.new, c.new_ci), _change(c), _p(c), c.test, f"{c.n_base}/{c.n_new}/{c.n_paired}"]
            for c in comp.checks]


HEADERS = ["", "group", "statistic", "base", "new", "change (95% CI)", "p / BH-adjusted p", "test",
           "n base/new/paired"]


def markdown(comp: Comparison) -> str:
    lines = [f"# cdbench compare: {comp.base} -> {comp.new} ({comp.kind})", ""]
    if comp.differences:
        lines.append(("Not comparable" if not comp.comparable else "Compared despite differing fingerprints")
                     + ": " + "; ".join(comp.differences) + "\n")
    if comp.settings:
        lines.append("Settings that differ: " + "; ".join(f"`{s}`" for s in comp.settings[:12]) + "\n")
    lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += [md_row(r) for r in check_rows(comp)]
    lines.append(f"\n{MARKS}. Changes: latencies as the ratio NEW/BASE of the pooled percentile (bootstrap over "
                 "cases), proportions as NEW-BASE (paired bootstrap); tests: exact McNemar, Wilcoxon signed-rank on "
                 "per-case log ratios, Mann-Whitney where cases cannot be paired.")
    if comp.unpaired_groups:
        lines.append(f"\nGroups in one run only: {', '.join(comp.unpaired_groups)}")
    if comp.flips:
        lines.append(f"\n## Cases that flipped ({len(comp.flips)})\n")
        for f in comp.flips[:50]:
            lines.append(f"- `{f.mark}` {f.group} {f.case} ({f.metric}): {f.message[:160]}".replace("\n", " "))
        if len(comp.flips) > 50:
            lines.append(f"- ... {len(comp.flips) - 50} more in compare.json")
    lines += ["", comp.verdict, ""]
    return "\n".join(lines)


def html(comp: Comparison) -> str:
    lat = [c for c in comp.checks if c.relative and c.change is not None and c.low is not None and c.low == c.low]
    sections = [KeyValues("Runs", [("base", comp.base), ("new", comp.new), ("kind", comp.kind),
                                   ("comparable", "yes" if comp.comparable else "no"),
                                   ("fingerprint differences", "; ".join(comp.differences) or "none"),
                                   ("settings that differ", "; ".join(comp.settings) or "none"),
                                   ("verdict", comp.verdict)]),
                Table("Checks", HEADERS, check_rows(comp), note=MARKS.replace("`", ""))]
    if lat:
        sections.append(Figure("Latency ratios NEW/BASE", forest([f"{c.group} {c.statistic}" for c in lat],
                                                                  [c.change for c in lat], [c.low for c in lat],
                                                                  [c.high for c in lat], comp.factor),
                               "95% bootstrap intervals over cases; the band is the threshold"))
    sections += scatter_figures(comp)
    if comp.flips:
        sections.append(Table("Cases that flipped", ["", "group", "case", "metric", "message"],
                              [[f.mark, f.group, f.case, f.metric, f.message] for f in comp.flips]))
    sections.append(Text("Verdict", [comp.verdict]))
    return render_page(Page(f"cdbench compare {comp.base} -> {comp.new}", sections))


def scatter_figures(comp: Comparison) -> list[Figure]:
    """One log-log scatter per latency metric with paired cases: BASE (x) against NEW (y) per case,
    coloured by group, with y = x and the ±factor band."""
    out = []
    for name, groups in comp.pairs.items():
        m = METRICS.get(name)
        unit = m.unit if m else ""
        pts = [(b, n, g) for g, pairs in groups.items() for b, n in pairs]
        if not pts:
            continue
        pooled = m is not None and m.kind == "pooled_latency"
        what = f"{name} per case" + (" (mean over its tokens)" if pooled else "")
        svg = scatter_ab([p[0] for p in pts], [p[1] for p in pts], unit, what,
                         (f"BASE {comp.base}", f"NEW {comp.new}"), comp.factor,
                         [p[2] for p in pts] if len(groups) > 1 else None)
        desc = f"{m.description}; " if m else ""
        out.append(Figure(f"Per case: {name} ({unit})", svg,
                          f"{desc}{len(pts)} paired cases. Above the diagonal: slower in NEW; the shaded band is "
                          f"within ×{comp.factor:g} of BASE. Log-log; cases with a value of 0 are not shown."))
    return out


def write_outputs(comp: Comparison, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "compare.md", out_dir / "compare.json", out_dir / "compare.html"]
    paths[0].write_text(markdown(comp), encoding="utf-8")
    paths[1].write_text(json.dumps(comp.to_json(), indent=2, default=str) + "\n", encoding="utf-8")
    paths[2].write_text(html(comp), encoding="utf-8")
    return paths
