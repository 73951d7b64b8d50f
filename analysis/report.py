"""The campaign report: a folder with a Markdown page, an HTML page, CSV tables and PNG figures.

Reads the database through ``db.store`` only. Simulated power is labelled on every page and
figure where it appears, and simulated and measured runs are never pooled in one figure.
"""

from __future__ import annotations

import html
import statistics
from pathlib import Path
from typing import Any

RUN_COLUMNS = ("run_id", "arch_hash", "epochs", "gpu_type", "seed", "status", "power_source", "duration_s",
               "energy_j", "idle_power_w", "valid_accuracy", "test_accuracy", "params", "flops")
PHASE_COLORS = {"warmup": "#888888", "idle": "#1f77b4", "train": "#d62728", "eval": "#2ca02c",
                "cooldown": "#9467bd"}


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_runs_csv(runs: list[dict[str, Any]], path: Path) -> None:
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(RUN_COLUMNS)
        for r in runs:
            w.writerow([r.get(c) for c in RUN_COLUMNS])


def energy_by_architecture_figure(runs: list[dict[str, Any]], path: Path) -> None:
    """Energy per trial (kJ) by architecture, one panel per epoch budget, seeds as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r["epochs"] for r in runs})
    archs = sorted({r["arch_hash"] for r in runs})
    sources = sorted({r["power_source"] or "?" for r in runs})
    fig, axes = plt.subplots(1, len(budgets), figsize=(4 + 2.5 * len(budgets), 4), squeeze=False)
    for ax, e in zip(axes[0], budgets, strict=True):
        data = [[r["energy_j"] / 1e3 for r in runs if r["epochs"] == e and r["arch_hash"] == a] for a in archs]
        ax.boxplot(data, tick_labels=[a[:8] for a in archs])
        for i, ys in enumerate(data, start=1):
            ax.scatter([i] * len(ys), ys, s=14, color="black", zorder=3)
        ax.set_title(f"{e} epochs")
        ax.set_xlabel("architecture (hash prefix)")
        ax.tick_params(axis="x", rotation=45)
    axes[0][0].set_ylabel("energy per trial, train + eval (kJ)")
    label = "SIMULATED power (not a measurement)" if sources == ["simulated"] else f"power source: {', '.join(sources)}"
    fig.suptitle(f"Energy per trial by architecture; {label}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def power_trace_figure(trace: list[dict[str, Any]], run: dict[str, Any], path: Path) -> None:
    """One run's power over time, coloured by phase, epochs annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    t0 = trace[0]["t_s"] if trace else 0.0
    for phase, color in PHASE_COLORS.items():
        pts = [(s["t_s"] - t0, s["power_w"]) for s in trace if s["phase"] == phase]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=4, color=color, label=phase)
    ax.set_xlabel("time since trace start (s)")
    ax.set_ylabel("power (W)")
    src = run["power_source"]
    tag = "SIMULATED power (not a measurement)" if src == "simulated" else f"power source: {src}"
    ax.set_title(f"run {run['run_id']}: arch {run['arch_hash'][:8]}, {run['epochs']} epochs, seed {run['seed']}; {tag}")
    ax.legend(markerscale=3, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _md_table(rows: list[list[str]], header: list[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def write_report(store: Any, info: Any, out: Path) -> Path:
    """Write ``out/report.md`` and ``out/report.html`` with tables and figures; returns the Markdown page."""
    out.mkdir(parents=True, exist_ok=True)
    runs = store.runs(info.id, status=None)
    done = [r for r in runs if r["status"] == "done"]
    write_runs_csv(runs, out / "runs.csv")
    sources = sorted({r["power_source"] or "?" for r in done})
    figures: list[tuple[str, str]] = []
    for source in sources:  # never pool simulated with measured power in one figure
        subset = [r for r in done if (r["power_source"] or "?") == source]
        name = f"energy_by_architecture_{source}.png" if len(sources) > 1 else "energy_by_architecture.png"
        energy_by_architecture_figure(subset, out / name)
        figures.append((name, f"Energy per trial by architecture ({source})"))
    if done:
        longest = max(done, key=lambda r: (r["epochs"], r["duration_s"] or 0))
        trace = store.trace(longest["run_id"])
        if trace:
            power_trace_figure(trace, longest, out / "power_trace.png")
            figures.append(("power_trace.png", f"Power trace of run {longest['run_id']} by phase"))

    lines = [f"# Campaign {info.name}", ""]
    if "simulated" in sources:
        lines += ["> **Simulated power.** Runs marked `simulated` had no GPU meter: their power follows the real",
                  "> training load but is not a measurement of any device. Do not compare them with measured runs.", ""]
    lines += [f"- sweep: `{info.sweep}`; created {info.created_at:%Y-%m-%d %H:%M} UTC; code `{info.code_revision}`",
              f"- runs: {len(done)} done, {sum(r['status'] == 'failed' for r in runs)} failed, {len(runs)} in all",
              f"- power source(s): {', '.join(sources) or 'none'}", ""]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in done:
        groups.setdefault((r["arch_hash"], r["epochs"]), []).append(r)
    summary = [
        [h[:12], str(e), str(len(rs)), f"{statistics.median(x['energy_j'] for x in rs):.1f}",
         f"{statistics.median(x['duration_s'] for x in rs):.1f}", f"{statistics.mean(x['test_accuracy'] for x in rs):.3f}",
         f"{rs[0]['params']:,}"]
        for (h, e), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
    lines += ["## Energy by architecture and epoch budget", "",
              _md_table(summary, ["architecture", "epochs", "runs", "median energy (J)", "median duration (s)",
                                  "mean test accuracy", "params"]), ""]
    lines += ["## Runs", "", "All runs, also in `runs.csv`.", "",
              _md_table([[_fmt(r.get(c)) for c in RUN_COLUMNS] for r in runs], list(RUN_COLUMNS)), ""]
    lines += ["## Figures", ""]
    lines += [f"![{title}]({name})\n" for name, title in figures]
    page = out / "report.md"
    page.write_text("\n".join(lines))
    (out / "report.html").write_text(_html(info.name, lines))
    return page


def _html(title: str, md_lines: list[str]) -> str:
    """A plain HTML rendering of the Markdown page (tables, headings, images, paragraphs)."""
    body: list[str] = []
    in_table = False
    for line in md_lines:
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{c}</th>" for c in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            body.append(f'<figure><img src="{html.escape(src.strip().rstrip(")"))}" alt="{html.escape(alt)}">'
                        f"<figcaption>{html.escape(alt)}</figcaption></figure>")
        elif line.strip():
            body.append(f"<p>{html.escape(line.lstrip('>- ').replace('**', '').replace('`', ''))}</p>")
    if in_table:
        body.append("</table>")
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;font-size:12px}" \
            "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>" \
           f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
