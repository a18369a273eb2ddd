"""Gate outputs: gate.json, gate.md (appended to $GITHUB_STEP_SUMMARY when set), GitHub Actions
annotations, and JUnit XML (one testcase per check, classname cdbench.<engine>.<sampler>)."""
from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path

from ..reporting.markdown import row as md_row
from .gate import GateResult

VERDICT_TEXT = {0: "GATE PASSED", 1: "GATE FAILED", 3: "GATE NOT COMPARABLE"}


def _v(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.4g}"


def markdown(res: GateResult) -> str:
    lines = [f"# cdbench gate: {res.current}" + (f" against {res.baseline}" if res.baseline else ""), ""]
    if res.paired_fraction is not None:
        lines.append(f"{res.paired_fraction:.0%} of the baseline's cases paired.\n")
    lines += ["| verdict | group | statistic | threshold | baseline | current | change (95% CI) | adjusted p | note |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in res.checks:
        change = "n/a" if c.change is None else (f"{_v(c.change)} ({_v(c.low)}–{_v(c.high)})")
        lines.append(md_row([c.verdict.upper() if c.verdict == "fail" else c.verdict, c.group, c.statistic,
                             c.threshold, _v(c.baseline), _v(c.current), change, _v(c.p_adjusted), c.message]))
    lines += ["", VERDICT_TEXT.get(res.exit_code, "GATE ERROR"), ""]
    return "\n".join(lines)


def junit(res: GateResult) -> str:
    suite = ET.Element("testsuite", name="cdbench.gate", tests=str(len(res.checks)),
                       failures=str(sum(c.verdict == "fail" for c in res.checks)), errors="0",
                       skipped=str(sum(c.verdict == "skipped" for c in res.checks)),
                       time=f"{sum(c.seconds for c in res.checks):.6f}")
    for c in res.checks:
        case = ET.SubElement(suite, "testcase", classname="cdbench." + c.group.replace("/", "."),
                             name=f"{c.statistic} {c.threshold}", time=f"{c.seconds:.6f}")
        if c.verdict == "fail":
            ET.SubElement(case, "failure", message=c.message, type="threshold").text = c.message
        elif c.verdict == "skipped":
            ET.SubElement(case, "skipped", message=c.message)
    root = ET.Element("testsuites", name="cdbench", tests=suite.get("tests"), failures=suite.get("failures"),
                      errors="0", skipped=suite.get("skipped"), time=suite.get("time"))
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def annotations(res: GateResult) -> list[str]:
    """GitHub Actions workflow commands: ::error:: per failed check, ::warning:: past threshold only."""
    out = []
    for c in res.checks:
        text = f"{c.group} {c.statistic}: {c.message}".replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        if c.verdict == "fail":
            out.append(f"::error title=cdbench gate::{text}")
        elif "not significant" in c.message:
            out.append(f"::warning title=cdbench gate::{text}")
    return out


def write_outputs(res: GateResult, out_dir: Path, junit_path: str | None = None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = markdown(res)
    paths = [out_dir / "gate.json", out_dir / "gate.md"]
    paths[0].write_text(json.dumps(asdict(res), indent=2, default=str) + "\n", encoding="utf-8")
    paths[1].write_text(md, encoding="utf-8")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(md + "\n")
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for line in annotations(res):
            print(line, file=sys.stdout)
    if junit_path:
        Path(junit_path).parent.mkdir(parents=True, exist_ok=True)
        Path(junit_path).write_text(junit(res), encoding="utf-8")
        paths.append(Path(junit_path))
    return paths
