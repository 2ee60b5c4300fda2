"""Regenerate the results, the chart and the README's short table from bench/results/*.json.

    python -m bench.report      # writes bench/results/RESULTS.md and bench/results/chart.png

RESULTS.md has everything: the machine, the command, a table per scenario with medians,
spread, CPU seconds per million events and ratios to the peers, and every target of the
issues with the figure measured and whether it was met. From the default results directory
it also rewrites two marker-delimited sections: the README's (one short table, gravixd vs
the FastAPI peer vs the trio + h11 ceiling, events/s and CPU s per M events, and links; no
issue numbers) and the targets table in docs/benchmarks.md. It reports what the JSON says;
it never tunes or hides a missed target.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCENARIO_ORDER = ("decode", "http", "tcp", "durability", "s3")
_SERVER_LABELS = {
    "gravixd": "gravixd",
    "gravixd_pure": "gravixd, pure protobuf path",
    "fastapi": "FastAPI+uvicorn+pydantic+pyarrow",
    "trio_h11": "trio+h11, no work",
    "nginx": "nginx return 204",
}


def load_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted(results_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
            continue
        docs[doc.get("scenario", path.stem)] = doc
    return docs


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _si(value: float | None) -> str:
    if value is None:
        return "–"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def find(
    doc: dict[str, Any] | None, case: str, server: str, load: str | None = "wrk", **variant: Any
) -> dict[str, Any] | None:
    """The result row of `case` on `server` (and load tool, and variant keys), or None."""
    if not doc:
        return None
    for r in doc.get("results", []):
        if r.get("case") != case or r.get("server") != server:
            continue
        if load is not None and r.get("load") != load:
            continue
        if all(r.get("variant", {}).get(k) == v for k, v in variant.items()):
            return r
    return None


def eps(row: dict[str, Any] | None) -> float | None:
    return (row or {}).get("median", {}).get("events_per_second")


def cpu(row: dict[str, Any] | None) -> float | None:
    """Median CPU seconds per million events (results written before the rename too)."""
    median = (row or {}).get("median", {})
    return median.get("cpu_s_per_M_events", median.get("cpu_seconds_per_million_events"))


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def scenario_table(name: str, doc: dict[str, Any]) -> list[str]:
    results = doc.get("results", [])
    if not results:
        return [f"_No results in {name}.json._", ""]
    peers = name == "http"
    head = (
        "| case | server | load | events/s (median) | min – max | req/s | MB/s | p50 ms "
        "| p99 ms | CPU s / M events | peak RSS MB |"
    )
    if peers:
        head += " gravixd ÷ this |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        m, lo, hi = r.get("median", {}), r.get("min", {}), r.get("max", {})
        server = _SERVER_LABELS.get(r["server"], r["server"])
        if name == "durability":
            server += f" (ack={r['variant'].get('ack')})"
        if r.get("error") and not r.get("runs"):
            error = " ".join(r["error"].split())[:120].replace("|", "/")
            lines.append(f"| {r['case']} | {server} | {r['load']} | error: {error} |")
            continue
        row = (
            f"| {r['case']} | {server} | {r['load']} | {_num(m.get('events_per_second'))} "
            f"| {_si(lo.get('events_per_second'))} – {_si(hi.get('events_per_second'))} "
            f"| {_num(m.get('requests_per_second'))} | {_num(m.get('mb_per_second'), 1)} "
            f"| {_num(m.get('latency_p50_ms'), 2)} | {_num(m.get('latency_p99_ms'), 2)} "
            f"| {_num(cpu(r), 2)} "
            f"| {_num(m.get('peak_rss_mb'))} |"
        )
        if peers:
            ours = eps(find(doc, r["case"], "gravixd", r["load"]))
            row += " – |" if r["server"] == "gravixd" else f" {_ratio(ours, eps(r))} |"
        lines.append(row)
    lines.append("")
    return lines


_HEADER_KEYS = {
    "scenario", "command", "created_utc", "machine", "preliminary", "preliminary_reasons",
    "settings",
}  # fmt: skip


def free_form_tables(doc: dict[str, Any]) -> list[str]:
    """Render a result file of another shape: scalars as a list, lists of rows as tables."""
    lines = []
    for key, value in doc.items():
        if key in _HEADER_KEYS:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(k for row in value for k in row))
            lines += ["", f"**{key}**", "", "| " + " | ".join(columns) + " |"]
            lines.append("|" + "---|" * len(columns))
            for row in value:
                cells = [_cell(row.get(c)) for c in columns]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        else:
            lines.append(f"- {key}: {_cell(value)}")
    return [*lines, ""]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "–" if value is None else str(value)


# --- targets -----------------------------------------------------------------------------


def _target(
    issue: str, what: str, figure: float | None, goal: float, shown: Callable[[float], str]
) -> str:
    if figure is None:
        verdict, got = "not measured", "–"
    else:
        verdict, got = ("met" if figure >= goal else "**missed**"), shown(figure)
    return f"| {issue} | {what} | ≥ {shown(goal)} | {got} | {verdict} |"


def _target_at_most(
    issue: str, what: str, figure: float | None, goal: float, shown: Callable[[float], str]
) -> str:
    """A target where less is better (CPU per event, a gap between two figures)."""
    if figure is None:
        verdict, got = "not measured", "–"
    else:
        verdict, got = ("met" if figure <= goal else "**missed**"), shown(figure)
    return f"| {issue} | {what} | ≤ {shown(goal)} | {got} | {verdict} |"


def _reported(issue: str, what: str, figure: float | None, shown: Callable[[float], str]) -> str:
    """A figure the issues ask to report, without a goal to meet."""
    return f"| {issue} | {what} | (report) | {'–' if figure is None else shown(figure)} | – |"


def targets(docs: dict[str, dict[str, Any]]) -> list[str]:
    http, decode, tcp, dur = (docs.get(s) for s in ("http", "decode", "tcp", "durability"))

    def g(case: str, server: str = "gravixd") -> float | None:
        return eps(find(http, case, server))

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    def times(x: float) -> str:
        return f"{x:.2f}×"

    native = eps(find(decode, "decode-1000", "protobuf-native", None))
    pure = eps(find(decode, "decode-1000", "protobuf-pure", None))
    tcp_nd = eps(find(tcp, "tcp-ndjson", "gravixd", "tcp_send"))
    tcp_pb = eps(find(tcp, "tcp-protobuf", "gravixd", "tcp_send"))
    pb, js, single = g("protobuf-1000"), g("json-1000"), g("single")
    # The pure path end to end: the --no-native series, or gravixd itself when not built.
    pure_pb = g("protobuf-1000", "gravixd_pure") or (
        pb if http and not http.get("machine", {}).get("gravixd_native") else None
    )
    rows = [
        "| issue | target (per core) | goal | measured | verdict |",
        "|---|---|---|---|---|",
        _target("#8", "batched protobuf ×1000, durable", pb, 2e6, _si),
        _target("#8", "… vs FastAPI peer", ratio(pb, g("protobuf-1000", "fastapi")), 8, times),
        _target("#8", "batched JSON ×1000, durable", js, 7e5, _si),
        _target("#8", "… vs FastAPI peer", ratio(js, g("json-1000", "fastapi")), 4, times),
        _target(
            "#8",
            "single events, durable, vs trio+h11 ceiling",
            ratio(single, g("single", "trio_h11")),
            0.9,
            times,
        ),
        _target(
            "#8", "single events vs FastAPI peer", ratio(single, g("single", "fastapi")), 1.8, times
        ),
        _target("#2", "batched JSON ×1000 events/s", js, 5e5, _si),
        _target("#2", "batched protobuf ×1000 events/s, pure path", pure_pb, 3e5, _si),
        _target("#2", "single-event requests/s", single, 8e3, _si),
        _target("#4", "decode, protobuf native ×1000", native, 6e6, _si),
        _reported("#4", "decode ×1000, native ÷ pure", ratio(native, pure), times),
        _target("#4", "end to end protobuf ×10000, durable", g("protobuf-10000"), 3e6, _si),
        _target("#5", "TCP ndjson events/s", tcp_nd, 5e5, _si),
        _target("#5", "TCP protobuf events/s", tcp_pb, 1.5e6, _si),
    ]

    def cpu_s(x: float) -> str:
        return f"{x:.2f} s"

    def pct(x: float) -> str:
        return f"{x:.1f}%"

    def gap(case: str) -> float | None:
        d = eps(find(dur, case, "gravixd", ack="durable"))
        r = eps(find(dur, case, "gravixd", ack="received"))
        return abs(r - d) / max(r, d) * 100 if d and r else None

    pb_fast, js_fast = g("protobuf-1000", "fastapi"), g("json-1000", "fastapi")
    rows += [
        _target("#13", "protobuf ×1000, durable, vs FastAPI peer", ratio(pb, pb_fast), 8, times),
        _target("#13", "JSON ×1000, durable, vs FastAPI peer", ratio(js, js_fast), 4, times),
        _target(
            "#13",
            "single events, durable, vs trio+h11 ceiling",
            ratio(single, g("single", "trio_h11")),
            0.7,
            times,
        ),
        _target("#13", "raw TCP protobuf events/s", tcp_pb, 3e6, _si),
        _target_at_most("#13", "durable vs received, protobuf ×1000", gap("protobuf-1000"), 5, pct),
        _target_at_most(
            "#13",
            "CPU s per M events, protobuf ×1000",
            cpu(find(http, "protobuf-1000", "gravixd")),
            0.5,
            cpu_s,
        ),
        _target_at_most(
            "#13",
            "CPU s per M events, JSON ×1000",
            cpu(find(http, "json-1000", "gravixd")),
            1.4,
            cpu_s,
        ),
    ]
    for case in ("protobuf-1000", "protobuf-10000"):
        gain = ratio(g(case), g(case, "gravixd_pure"))
        rows.append(_reported("#4", f"end to end {case}, native ÷ pure path", gain, times))
    for case in ("json-1000", "protobuf-1000"):
        d = eps(find(dur, case, "gravixd", ack="durable"))
        r = eps(find(dur, case, "gravixd", ack="received"))
        gap = abs(r - d) / max(r, d) * 100 if d and r else None
        verdict = "not measured" if gap is None else ("met" if gap <= 10 else "**missed**")
        rows.append(
            f"| #8 | durable vs received ack, {case} | ≤ 10% apart | "
            f"{'–' if gap is None else f'{gap:.1f}% ({_si(d)} vs {_si(r)})'} | {verdict} |"
        )
    rss = [
        r.get("max", {}).get("peak_rss_mb")
        for doc in (http, tcp, dur)
        for r in (doc or {}).get("results", [])
        if r.get("server") == "gravixd"
    ]
    rss = [x for x in rss if x is not None]
    rows.append(
        f"| #8 | gravixd peak RSS under any offered load | bounded by config | "
        f"{_num(max(rss)) + ' MB' if rss else '–'} | – |"
    )
    return rows + [""]


def machine_lines(doc: dict[str, Any]) -> list[str]:
    m = doc.get("machine", {})
    libs = ", ".join(f"{k} {v}" for k, v in m.get("libraries", {}).items())
    tools = ", ".join(v for v in m.get("tools", {}).values() if v)
    s = doc.get("settings", {})
    return [
        f"- CPU: {m.get('cpu_model')} × {m.get('nproc')} (server pinned to core "
        f"{s.get('server_cpu')}, load generator to core {s.get('load_cpu')}); "
        f"kernel {m.get('kernel')}",
        f"- Python {m.get('python')}; protobuf implementation {m.get('protobuf_implementation')}; "
        f"gravixd native decoder: {'built' if m.get('gravixd_native') else 'not built'}; "
        f"gravixd commit {m.get('gravixd_commit')}",
        f"- {libs}",
        f"- {tools}",
        f"- Runs: {s.get('runs')} × {s.get('seconds')} s after a "
        f"{s.get('warmup_seconds')} s warm-up, "
        f"wrk -t1 -c{s.get('connections')}; load average at start {m.get('loadavg_at_start')}",
        "",
    ]


def render(docs: dict[str, dict[str, Any]], chart: str | None) -> str:
    lines = ["# gravixd benchmark results", ""]
    prelim = {
        name: "; ".join(doc.get("preliminary_reasons") or ["short or few runs"])
        for name, doc in docs.items()
        if doc.get("preliminary")
    }
    if prelim:
        why = ", ".join(f"{name} ({reason})" for name, reason in prelim.items())
        lines += [
            f"> **Preliminary:** {why}. These figures check the harness; do not quote them.",
            "",
        ]
    lines += [
        "Regenerate everything (about 25 minutes with the default 3 runs × 5 s; needs "
        "`pip install -e '.[bench]'` and `bench/install-bench-tools`):",
        "",
        "```",
        "python -m bench.run all     # every scenario (see docs/benchmarks.md), then this report",
        "python -m bench.report      # only this file and the chart, from bench/results/*.json",
        "```",
        "",
        "Figures are medians of the runs, with the lowest and highest run beside them; ratios "
        "are gravixd's median over the peer's median from the same run of the suite.",
        "",
    ]
    first = next(iter(docs.values()), None)
    if first:
        lines += ["## Machine", "", *machine_lines(first)]
    if chart:
        lines += [f"![gravixd vs peers]({chart})", ""]
    lines += ["## Targets", "", *targets(docs)]
    for name in (*SCENARIO_ORDER, *sorted(set(docs) - set(SCENARIO_ORDER))):
        doc = docs.get(name)
        if not doc:
            continue
        command = f"Command: `{doc.get('command', '')}` ({doc.get('created_utc', '')})"
        lines += [f"## {name}", "", command, ""]
        if "results" in doc and isinstance(doc["results"], list):
            lines += scenario_table(name, doc)
        else:  # a scenario with its own shape (bench_s3.py): its lists of rows as tables
            lines += free_form_tables(doc)
    return "\n".join(lines)


README_START = "<!-- bench-results:start (written by python -m bench.report) -->"
README_END = "<!-- bench-results:end -->"
TARGETS_START = "<!-- bench-targets:start (written by python -m bench.report) -->"
TARGETS_END = "<!-- bench-targets:end -->"
# The README's rows; RESULTS.md has every case.
_README_CASES = (("single", "single events"), ("json-1000", "JSON ×1000"),
                 ("protobuf-1000", "protobuf ×1000"))  # fmt: skip


def readme_section(docs: dict[str, dict[str, Any]]) -> str:
    """The README's results: one short table and where the rest is (no issue numbers: the
    targets live in docs/benchmarks.md)."""
    http, tcp = docs.get("http"), docs.get("tcp")
    lines = [
        "| events a request | gravixd events/s | CPU s / M events | FastAPI peer | CPU s / M "
        "events | trio+h11, no work | CPU s / M events |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, label in _README_CASES:
        rows = [find(http, case, server) for server in ("gravixd", "fastapi", "trio_h11")]
        if rows[0] is None:
            continue
        cells = " | ".join(f"{_si(eps(row))} | {_num(cpu(row), 2)}" for row in rows)
        lines.append(f"| {label} | {cells} |")
    row = find(tcp, "tcp-protobuf", "gravixd", "tcp_send")
    if row is not None:
        lines.append(
            f"| raw TCP protobuf | {_si(eps(row))} | {_num(cpu(row), 2)} | – | – | – | – |"
        )
    otlp_rows = {row.get("path"): row for row in docs.get("otlp", {}).get("http", [])}
    for path, label in (("/v1/traces", "OTLP spans, protobuf ×1000 †"),
                        ("/v1/logs", "OTLP log records, protobuf ×1000 †")):  # fmt: skip
        per_cpu = otlp_rows.get(path, {}).get("records_per_server_cpu_second")
        if per_cpu:
            lines.append(f"| {label} | {_si(per_cpu)} | {_num(1e6 / per_cpu, 2)} | – | – | – | – |")
    # The machine and commit of the HTTP rows (other rows may come from other runs).
    m = (http or next(iter(docs.values()), {})).get("machine", {})
    prelim = (
        " Preliminary figures (short runs or a busy machine)."
        if any(doc.get("preliminary") for doc in docs.values())
        else ""
    )
    lines += [
        "",
        f"One core each for server and load (`wrk -t1 -c8`), durable acks; gravixd commit "
        f"{m.get('gravixd_commit')}, {m.get('cpu_model')}, `python -m bench.run http` (the raw "
        f"TCP row: `python -m bench.run tcp`).{prelim} "
        "Every case, the targets and the method: [docs/benchmarks.md](docs/benchmarks.md); "
        "every row: [bench/results/RESULTS.md](bench/results/RESULTS.md).",
    ]
    if otlp_rows:
        lines.append(
            "† records per server CPU-second (`python -m bench.bench_otlp`: its Python load "
            "client, not the server, is the limit of records per second on this box)."
        )
    return "\n".join(lines)


def update_readme(
    readme: Path, section: str, start_marker: str = README_START, end_marker: str = README_END
) -> bool:
    """Replace the text between a file's markers; False when it has none."""
    text = readme.read_text()
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        return False
    text = text[: start + len(start_marker)] + "\n" + section + "\n" + text[end:]
    readme.write_text(text)
    return True


def chart(docs: dict[str, dict[str, Any]], path: Path) -> bool:
    """A bar chart of events/s per case, gravixd against its peers, one panel per scenario."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart", file=sys.stderr)
        return False
    panels = [
        (name, doc)
        for name in SCENARIO_ORDER
        if (doc := docs.get(name)) and isinstance(doc.get("results"), list) and doc["results"]
    ]
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.2 * len(panels) + 1), squeeze=False)
    for ax, (name, doc) in zip(axes[:, 0], panels, strict=True):
        rows = [r for r in doc["results"] if r.get("runs")]
        cases = list(dict.fromkeys(r["case"] for r in rows))
        series = list(dict.fromkeys(_series(name, r) for r in rows))
        palette = {label: _color(label, i) for i, label in enumerate(series)}
        labelled: set[str] = set()
        for j, case in enumerate(cases):
            # Only the series measured on this case share its slot, so bars stay wide.
            here = [r for r in rows if r["case"] == case and eps(r)]
            width = 0.8 / max(1, len(here))
            for i, r in enumerate(here):
                label = _series(name, r)
                value = eps(r)
                ax.bar(
                    j + (i - (len(here) - 1) / 2) * width,
                    value,
                    width,
                    yerr=[[value - r["min"]["events_per_second"]],
                          [r["max"]["events_per_second"] - value]],
                    capsize=2,
                    color=palette[label],
                    hatch="//" if r.get("load") == "emit" else None,
                    label=None if label in labelled else label,
                )  # fmt: skip
                labelled.add(label)
        ax.set_yscale("log")
        ax.set_xticks(range(len(cases)), cases, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("events/s (log)")
        ax.set_title(f"{name}" + (" (preliminary)" if doc.get("preliminary") else ""))
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("gravixd vs peers, events/s per core (median, whiskers = min/max of runs)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _color(label: str, index: int) -> str:
    for prefix, color in _COLORS.items():
        if label.startswith(prefix):
            return color
    return f"C{index % 10}"


# The same server keeps its colour in every panel; gravixd in emit-driven rows shares it.
_COLORS = {
    "gravixd, pure": "tab:cyan",
    "gravixd ack=received": "tab:purple",
    "gravixd": "tab:blue",
    "FastAPI": "tab:orange",
    "trio+h11": "tab:green",
    "nginx": "tab:gray",
}


def _series(scenario: str, r: dict[str, Any]) -> str:
    label = _SERVER_LABELS.get(r["server"], r["server"])
    if scenario == "durability":
        return f"{label} ack={r['variant'].get('ack')}"
    if r.get("load") not in ("wrk", "in-process", "tcp_send"):
        return f"{label} ({r['load']})"
    return label


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    results_dir = Path(args[0]) if args else RESULTS_DIR
    docs = load_results(results_dir)
    if not docs:
        print(f"no results in {results_dir}: run python -m bench.run first", file=sys.stderr)
        return 1
    has_chart = chart(docs, results_dir / "chart.png")
    out = results_dir / "RESULTS.md"
    out.write_text(render(docs, "chart.png" if has_chart else None))
    print(f"wrote {out}" + (f" and {results_dir / 'chart.png'}" if has_chart else ""))
    if results_dir == RESULTS_DIR:
        root = RESULTS_DIR.parents[1]
        if update_readme(root / "README.md", readme_section(docs)):
            print(f"updated the results section of {root / 'README.md'}")
        doc = root / "docs" / "benchmarks.md"
        if update_readme(doc, "\n".join(targets(docs)), TARGETS_START, TARGETS_END):
            print(f"updated the targets table of {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
