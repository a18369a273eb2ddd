"""The HTML report of one `cdbench fidelity` run: run_dir/report.html, self-contained.

Read from the run directory: manifest.json (provenance), rows.jsonl (one row per task x sampler,
harness.fidelity.run.fidelity_rows), fidelity.json (per task: the exact target, the samplers and
ASAp's convergence points) and curve.csv (the convergence points; fidelity.json's are used when the
run stopped before writing it). Figures: each sampler's TV to the exact target per task against the
null band (the TV exact sampling itself shows with as many draws), ASAp's convergence (the TV of its
trie-implied next-sample distribution as samples accumulate) and its root estimate θ(root) against
P(L), the mass the constraint's language has under the model.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from ..reporting.writer import read_rows
from . import plots
from .page import Figure, KeyValues, Links, Page, Section, Table, Text, render_page

REPORT_FILE = "report.html"
ARTIFACTS = ("fidelity.md", "fidelity.json", "curve.csv", "rows.jsonl", "manifest.json")
EXACT_LCD = "masking (exact LCD)"


def build_fidelity_report(run_dir: Path) -> Path:
    """Write run_dir/report.html for a `cdbench fidelity` run and return its path."""
    run_dir = Path(run_dir)
    out = run_dir / REPORT_FILE
    out.write_text(render_page(fidelity_report_page(run_dir)), encoding="utf-8")
    return out


def fidelity_report_page(run_dir: Path) -> Page:
    """The report of one fidelity run as a Page (sections in reading order)."""
    run_dir = Path(run_dir)
    manifest = _read_json(run_dir / "manifest.json")
    results = _read_json(run_dir / "fidelity.json").get("results", [])
    rows = read_rows(run_dir)
    curve = read_curve(run_dir, results)
    tasks = list(dict.fromkeys([*(str(r.get("task")) for r in results), *(str(r.get("task")) for r in rows)]))
    p_of_l = {str(r["task"]): r.get("p_of_l") for r in [*results, *rows] if r.get("p_of_l")}
    sections: list[Section] = [_provenance(run_dir, manifest)]
    if not rows and not results:
        sections.append(Text("Results", ["This fidelity run has no results yet."]))
    else:
        sections += [_targets(results), _sampler_table(rows, p_of_l), _tv_figure(rows, tasks)]
        sections += _convergence(curve, tasks, p_of_l)
    sections.append(Links("Files of this run", [(n, n) for n in ARTIFACTS if (run_dir / n).exists()]))
    run_id = manifest.get("run_id") or run_dir.name
    status = manifest.get("status") or "unknown"
    return Page(title=f"cdbench fidelity {run_id}",
                subtitle=f"started {manifest.get('started') or 'date unknown'} · {status} · {len(tasks)} tasks · "
                         f"{len(rows)} task × sampler rows", sections=sections)


# ---------------------------------------------------------------- loading

def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def read_curve(run_dir: Path, results: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """ASAp's convergence points (task, samples, trie_tv, theta_root, distinct, trie_nodes, seconds):
    curve.csv, or the curves in fidelity.json when the run stopped before writing it."""
    path = Path(run_dir) / "curve.csv"
    if path.exists():
        with path.open(newline="", encoding="utf-8") as fh:
            raw = list(csv.DictReader(fh))
    else:
        raw = [p for r in (results or []) for p in r.get("curve") or []]
    return [{"task": str(p.get("task")), **{k: _float(p.get(k)) for k in
                                             ("samples", "trie_tv", "theta_root", "distinct", "trie_nodes", "seconds")}}
            for p in raw]


# ---------------------------------------------------------------- sections

def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)


def _provenance(run_dir: Path, manifest: dict[str, Any]) -> KeyValues:
    env, cfg = manifest.get("environment", {}), manifest.get("config", {})
    model, engine = env.get("model", {}), env.get("engine", {})
    command = manifest.get("command")
    tasks = cfg.get("tasks")
    items = [
        ("run id", manifest.get("run_id") or run_dir.name),
        ("status", manifest.get("status") or "unknown"),
        ("started / ended", f"{manifest.get('started') or 'unknown'} / {manifest.get('ended') or 'not finished'}"),
        ("cdbench commit", env.get("cdbench_commit") or "unknown"),
        ("command", " ".join(command) if isinstance(command, list) and command else "not recorded"),
        ("model", f"{model.get('model_name') or ''} {model.get('model') or 'unknown'}".strip()),
        ("model sha256", model.get("model_sha256") or "unknown"),
        ("CPU", f"{env.get('cpu_model', 'unknown')} · {env.get('cpu_count', '?')} CPUs · "
                f"LM threads {model.get('lm_threads', '?')}"),
        ("python", env.get("python") or "unknown"),
        ("engine", f"{engine.get('name', cfg.get('engine', '?'))} {engine.get('version', '')} · "
                   f"{_json_text(engine.get('settings', {}))}"),
        ("dataset / tasks", f"{cfg.get('dataset', '?')} / {', '.join(map(str, tasks)) if tasks else 'all'}"),
        ("samplers", ", ".join(map(str, cfg.get("samplers") or [])) or "?"),
        ("samples / particles", f"{cfg.get('samples', '?')} per sampler / {cfg.get('particles', '?')} "
                                f"(AWRS-SMC runs samples / particles times)"),
        ("level / length bound", f"{cfg.get('level', '?')} / "
                                 f"{cfg.get('length_bound') or 'each task’s own'}"),
        ("seed / null-band repetitions", f"{cfg.get('seed', '?')} / {cfg.get('null_reps', '?')}"),
        ("exact-walk budget", f"{cfg.get('max_prefixes', '?')} prefixes, {cfg.get('max_seconds', '?')} s"),
        ("comparable fingerprint", manifest.get("fingerprint", {}).get("comparable_digest") or "unknown"),
    ]
    if env.get("resumed"):
        items.insert(3, ("resumed", f"{len(env['resumed'])} time(s); tasks already finished at each resume: "
                                    f"{', '.join(map(str, env['resumed']))}"))
    return KeyValues("Provenance", [(k, str(v)) for k, v in items])


def _mass(v: float) -> float:
    """A probability mass computed as 1 minus a sum: rounding below 1e-12 (either sign) shown as 0."""
    return 0.0 if abs(v) < 1e-12 else v


def _drop_empty_last(columns: list[str], rows: list[list[Any]]) -> tuple[list[str], list[list[Any]]]:
    """Leave out the last column (messages) when no row has one."""
    if any(r[-1] for r in rows):
        return columns, rows
    return columns[:-1], [r[:-1] for r in rows]


def _top(strings: Any) -> str:
    if not isinstance(strings, list):
        return ""
    return ", ".join(f"{json.dumps(s, ensure_ascii=False)} {p:.3f}" for s, p in strings if isinstance(p, (int, float)))


def _targets(results: list[dict[str, Any]]) -> Table:
    rows = []
    for r in results:
        dead = r.get("lcd_dead_end_mass")
        rows.append([r.get("task"), r.get("kind"), r.get("status"), r.get("length_bound"), r.get("sequences"),
                     r.get("strings"), r.get("p_of_l"), r.get("walk_prefixes"), r.get("walk_s"),
                     None if dead is None else _mass(float(dead)), _top(r.get("top_strings")),
                     r.get("message") or ""])
    columns, rows = _drop_empty_last(["task", "kind", "status", "length bound (tokens)", "token sequences", "strings",
                                      "P(L)", "walk prefixes (LM calls)", "walk s", "exact LCD dead-end mass",
                                      "most likely under Q", "message"], rows)
    return Table("Exact targets per task", columns, rows,
                 note="Q is the model's distribution restricted to the constraint's language L under the length "
                      "bound, computed exactly by walking every viable prefix; P(L) is the mass the model gives L. "
                      "Dead-end mass: what token masking's exact distribution loses to prefixes that cannot "
                      "finish within the bound.")


def _sampler_table(rows: list[dict[str, Any]], p_of_l: dict[str, Any]) -> Table:
    out = []
    for r in rows:
        theta, pl = r.get("theta_root"), p_of_l.get(str(r.get("task")))
        out.append([r.get("task"), r.get("sampler") or f"({r.get('status')})", r.get("samples"), r.get("tv"),
                    r.get("kl"), r.get("null_tv_mean"), r.get("null_tv_p95"), r.get("inside_band"),
                    None if r.get("outside_L") is None else _mass(float(r["outside_L"])),
                    r.get("zhat_over_p_of_l"), r.get("evals_per_step"), r.get("trie_tv"),
                    theta / pl if theta is not None and pl else None, r.get("seconds"),
                    r.get("message") or ""])
    columns, out = _drop_empty_last(["task", "sampler", "samples", "TV", "KL(q̂‖Q) nats", "null TV mean",
                                     "null TV p95", "inside null band", "mass outside L", "Ẑ / P(L)",
                                     "evaluations per step", "ASAp trie TV", "θ(root) / P(L)", "seconds", "message"],
                                    out)
    return Table("Distance to the exact target: task × sampler", columns, out,
                 note="TV and KL of each sampler's empirical distribution to Q (KL is ∞ when a sample falls outside "
                      "L). Null band: the TV of as many exact draws from Q (mean and 95th percentile); a sampler "
                      "inside it cannot be told from exact sampling with this many samples. masking (exact LCD): "
                      "token masking's own distribution, computed exactly. AWRS-SMC pools every particle by its "
                      "weight; Ẑ / P(L) should be near 1. ASAp: the trie-implied distribution after the last "
                      "sample, and its root estimate θ against P(L).")


def _tv_figure(rows: list[dict[str, Any]], tasks: list[str]) -> Figure:
    samplers = list(dict.fromkeys(str(r["sampler"]) for r in rows if r.get("sampler")))
    shown = [t for t in tasks if any(str(r.get("task")) == t and r.get("sampler") for r in rows)]
    by = {(str(r.get("task")), str(r.get("sampler"))): r for r in rows}
    series = {s: [_float(by.get((t, s), {}).get("tv")) for t in shown] for s in samplers}
    marks = {s: [_float(by.get((t, s), {}).get("null_tv_p95")) for t in shown] for s in samplers}
    svg = plots.bars_with_marks(shown, series, marks, "total variation to Q", "TV to the exact target per task",
                                "null band p95 (exact draws, same n)")
    return Figure("TV to the exact target per task and sampler", svg,
                  "Bars: each sampler's TV to Q (0 = the exact distribution, 1 = disjoint). Black ticks: the 95th "
                  "percentile of the TV exact sampling shows with the same number of samples; a bar below its tick "
                  "is inside the null band. The exact LCD has no tick: it is not sampled.")


def _convergence(curve: list[dict[str, Any]], tasks: list[str], p_of_l: dict[str, Any]) -> list[Section]:
    if not curve:
        return [Text("ASAp convergence", ["No convergence points: this run did not include the asap sampler."])]
    order = [t for t in tasks if any(p["task"] == t for p in curve)]
    order += sorted({p["task"] for p in curve} - set(order))
    points = {t: [p for p in curve if p["task"] == t] for t in order}
    tv_series = {t: ([p["samples"] for p in ps], [p["trie_tv"] for p in ps]) for t, ps in points.items()}
    out: list[Section] = [Figure(
        "ASAp convergence: TV of the trie-implied distribution",
        plots.curves(tv_series, "samples drawn (log scale)", "TV to Q (log scale)",
                     "ASAp: TV of the next sample's distribution to Q", logx=True, logy=True),
        "One line per task: after n samples, the total variation between the distribution ASAp's trie implies "
        "for its next sample and the exact Q. ASAp is exact in the limit, so each line should fall towards 0; "
        "points with TV 0 cannot be drawn on the log axis.")]
    ratio = {t: ([p["samples"] for p in ps],
                 [p["theta_root"] / p_of_l[t] if p["theta_root"] is not None and p_of_l.get(t) else None for p in ps])
             for t, ps in points.items()}
    if any(v is not None for _, ys in ratio.values() for v in ys):
        out.append(Figure(
            "ASAp convergence: θ(root) against P(L)",
            plots.curves(ratio, "samples drawn (log scale)", "θ(root) / P(L) (log scale)",
                         "ASAp's estimate of the language's mass", logx=True, logy=True,
                         reference=(1.0, "θ(root) = P(L)")),
            "θ(root) is ASAp's running estimate of P(L), the probability the model gives the constraint's "
            "language: unexplored continuations count as if they all finished, so it is too high early on and "
            "falls as the trie learns where sequences cannot finish; the ratio to the exact P(L) reaches 1 when "
            "it has learnt them all."))
    out.append(Table("ASAp convergence points",
                     ["task", "samples", "trie TV", "θ(root)", "θ(root) / P(L)", "distinct outputs", "trie nodes",
                      "seconds"],
                     [[p["task"], _int(p["samples"]), p["trie_tv"], p["theta_root"],
                       p["theta_root"] / p_of_l[p["task"]] if p["theta_root"] is not None and p_of_l.get(p["task"])
                       else None, _int(p["distinct"]), _int(p["trie_nodes"]), p["seconds"]] for p in curve],
                     note="From curve.csv; seconds since the sampler started on the task."))
    return out


def _int(v: float | None) -> int | None:
    return None if v is None else int(v)
