"""The table: every measurement beside its target from the performance issue, met or missed."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from .probes import median, percentile

MB = 1024 * 1024

# Targets from the performance issue (2 cores, Redis and PostgreSQL on loopback). The wall-time
# targets are the fastest peer of the table, on the table's shape sizes.
WIDE_PEER_S = 0.6
CHAIN_PEER_S = 0.3
DIAMOND_S = 1.05
COST_RATIO = 1.25
IMPORT_S = 0.3
COMPILE_S = 1.0
EFFICIENCY = 0.95
LATENCY_P95_MS = 50.0
MAP_ITEMS_S = 5000.0  # items a second, a map of 10,000 trivial items, 2 workers
MAP_VS_CELERY = 3.0  # Nexus-Flow's map at least this many times faster than Celery's group
WIDE_NODE_MS = 0.75  # wide 1 -> 1,000 -> 1, 2 workers
HTTP_MAP_S = 5.0  # 1,000 http items of 100 ms, 2 workers


def mark(ok: bool | None) -> str:
    if ok is None:
        return "[dim]n/a[/dim]"
    return "[green]met[/green]" if ok else "[red]missed[/red]"


def span(times: list[float]) -> str:
    if not times:
        return "-"
    return f"{median(times):.3f} ({min(times):.3f}–{max(times):.3f})"


def _raw_per_job(res: dict[str, Any], workers: str) -> float | None:
    drain = res.get("raw", {}).get(workers, {}).get("drain")
    if not drain:
        return None
    return median(drain["times"]) / drain["n"]


def shape_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (shape, worker count) with the derived numbers and the target verdict."""
    rows = []
    for workers, shapes in res.get("nexus", {}).items():
        per_job = _raw_per_job(res, workers)
        raw = res.get("raw", {}).get(workers, {})
        celery = res.get("celery", {}).get(workers, {})
        for name, m in shapes.items():
            med = median(m["times"])
            nodes = m["nodes"]
            units = m.get("items") or nodes  # a map's cost is per item
            per_node = med / units
            celery_times = (celery.get(name) or {}).get("times") or None
            vs_celery = median(celery_times) / med if celery_times else None
            ratio = per_node / per_job if per_job else None
            target, ok = "", None
            kind = name.split()[0]
            ok_status = set(m.get("statuses", [])) == {"succeeded"}
            if name == "diamond":
                ideal = math.ceil(2 / int(workers)) * diamond_seconds(res)
                eff = ideal / med
                m["efficiency"] = eff
                if int(workers) >= 2 and not res.get("quick"):
                    target = f"≤ {DIAMOND_S} s, eff ≥ {EFFICIENCY}"
                    ok = med <= DIAMOND_S and eff >= EFFICIENCY
                else:
                    target = f"eff ≥ {EFFICIENCY}"
                    ok = eff >= EFFICIENCY
            elif name.startswith("http map"):
                target = f"≤ {HTTP_MAP_S:g} s" if int(workers) == 2 else ""
                ok = med <= HTTP_MAP_S if target else None
            elif name.startswith("map ") and int(workers) == 2:
                target = f"≥ {MAP_ITEMS_S:,.0f} items/s, ≥ {MAP_VS_CELERY:g}× Celery"
                ok = units / med >= MAP_ITEMS_S and (vs_celery or 0) >= MAP_VS_CELERY
            elif name.startswith("map "):
                pass
            elif not res.get("quick") and name == "wide 1000" and int(workers) == 2:
                target = f"≤ {COST_RATIO}× RQ, ≤ {WIDE_NODE_MS} ms a node"
                ok = (ratio is not None and ratio <= COST_RATIO
                      and per_node * 1000 <= WIDE_NODE_MS)
            elif not res.get("quick") and name == "wide 200":
                target, ok = f"≤ {WIDE_PEER_S} s", med <= WIDE_PEER_S
            elif not res.get("quick") and name == "chain 100":
                target, ok = f"≤ {CHAIN_PEER_S} s", med <= CHAIN_PEER_S
            elif ratio is not None and kind in ("wide", "chain", "lattice"):
                target, ok = f"≤ {COST_RATIO}× RQ", ratio <= COST_RATIO
            if name == "diamond" or name.startswith("http map"):
                ratio = None  # waiting, not orchestration: the per-node ratio means nothing
            if res.get("quick"):
                ok = None  # small sizes: the smoke run checks the shapes run, not speed
            if not ok_status:
                ok = False
                target = (target + " " if target else "") + "(run failed)"
            rows.append({
                "shape": name, "workers": workers, "nodes": nodes, "times": m["times"],
                "items": m.get("items"),
                "nodes_s": units / med, "per_node_ms": per_node * 1000, "ratio": ratio,
                "raw_times": raw.get(name, {}).get("times"),
                "celery_times": celery_times, "vs_celery": vs_celery,
                "efficiency": m.get("efficiency"),
                "worker_rss": m["worker_peak_rss"], "client_rss": m["client_peak_rss"],
                "leftover": max(m.get("leftover_drain_s") or [0.0]),
                "target": target, "ok": ok,
            })
    return rows


def _units(row: dict[str, Any]) -> str:
    return f"{row['nodes']} + {row['items']:,} items" if row.get("items") else str(row["nodes"])


def diamond_seconds(res: dict[str, Any]) -> float:
    return 0.2 if res.get("quick") else 1.0


def render(res: dict[str, Any], console: Console) -> list[tuple[str, bool | None]]:
    """Print the tables; return ``(target, met?)`` pairs."""
    verdicts: list[tuple[str, bool | None]] = []
    mach = res.get("machine", {})
    console.print(f"[bold]Machine[/bold]: {mach.get('cpus')} CPUs ({mach.get('cpu', '?')}), "
                  f"{mach.get('memory_gb')} GB; Python {mach.get('python')}; Redis "
                  f"{mach.get('redis', '?')}; PostgreSQL {mach.get('postgresql', '?')}; "
                  f"RQ {mach.get('rq', '?')}; Celery {mach.get('celery', '?')}; "
                  f"repeats {res.get('repeats')}"
                  + (" [yellow](--quick: small sizes, targets not judged)[/yellow]"
                     if res.get("quick") else ""))

    raw = Table(title="Raw RQ baseline: SimpleWorker, JSON serializer, result_ttl=0")
    for col in ("workers", "no-op jobs", "drain s, median (min–max)", "jobs/s", "per job ms",
                "worker peak RSS MB"):
        raw.add_column(col, justify="right")
    for workers, r in res.get("raw", {}).items():
        d = r.get("drain")
        if d:
            med = median(d["times"])
            raw.add_row(workers, str(d["n"]), span(d["times"]), f"{d['n'] / med:.0f}",
                        f"{med / d['n'] * 1000:.2f}", f"{d['worker_peak_rss'] / MB:.0f}")
    console.print(raw)

    t = Table(title="Nexus-Flow beside Celery and raw RQ (wall time: start_run until the "
                    "run's final event; seconds, median (min–max); a map's rate and cost are "
                    "per item)")
    for col in ("shape", "workers", "nodes", "Nexus-Flow s", "nodes/s", "per node ms",
                "× RQ per job", "Celery s", "Celery ÷ Nexus-Flow", "raw RQ depends_on s",
                "diamond eff.", "leftover jobs drain s",
                "workers RSS MB",
                "client RSS MB", "target", ""):
        t.add_column(col, justify="right" if col not in ("shape", "target") else "left")
    for row in shape_rows(res):
        t.add_row(row["shape"], row["workers"], _units(row), span(row["times"]),
                  f"{row['nodes_s']:.0f}", f"{row['per_node_ms']:.3f}",
                  f"{row['ratio']:.2f}" if row["ratio"] is not None else "-",
                  span(row["celery_times"]) if row["celery_times"] else "-",
                  f"{row['vs_celery']:.1f}×" if row["vs_celery"] is not None else "-",
                  span(row["raw_times"]) if row["raw_times"] else "-",
                  f"{row['efficiency']:.2f}" if row["efficiency"] is not None else "",
                  f"{row['leftover']:.2f}",
                  f"{row['worker_rss'] / MB:.0f}", f"{row['client_rss'] / MB:.0f}",
                  row["target"], mark(row["ok"]))
        if row["ok"] is not None:
            verdicts.append((f"{row['shape']} x{row['workers']}: {row['target']}", row["ok"]))
    console.print(t)

    judge = not res.get("quick")
    o = Table(title="Engine-wide measurements")
    for col in ("measurement", "value", "target", ""):
        o.add_column(col)

    def add(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
        ok = ok if judge else None
        o.add_row(name, value, target, mark(ok) if target else "")
        if target and ok is not None:
            verdicts.append((f"{name}: {target}", ok))

    if "import_s" in res:
        imp = median(res["import_s"])
        add("import nexusflow_kernel (fresh process, median of 5)", f"{imp:.3f} s",
            f"≤ {IMPORT_S} s", imp <= IMPORT_S)
    if "import_engine_s" in res:
        add("import nexusflow_kernel.engine (for reference)",
            f"{median(res['import_engine_s']):.3f} s")
    for name, times in res.get("compile_s", {}).items():
        add(f"validate + compile {name}", span(times) + " s", f"≤ {COMPILE_S} s",
            median(times) <= COMPILE_S)
    mem = res.get("memory") or []
    if mem:
        for who, label in (("client", "starting process"), ("worker", "workers (2)")):
            parts = ", ".join(f"{m['nodes']}: {m[f'{who}_delta'] / MB:+.0f} MB" for m in mem)
            linear, ratio = res.get("memory_linear", {}).get(who, (None, float("nan")))
            add(f"memory growth, {label}, lattice nodes: peak − before",
                f"{parts} (slope ratio {ratio:.2f})", "linear", linear)
    if mem and all(m.get("seconds") for m in mem):
        parts = ", ".join(f"{m['nodes']}: {m['seconds'] / m['nodes'] * 1000:.2f} ms"
                          for m in mem)
        add("lattice run, per node cost vs size (2 workers, one run each)", parts)
    lat = res.get("latency")
    if lat:
        for key, label in (("redis", "XREAD BLOCK client"), ("websocket", "websocket client")):
            vals = lat.get(key)
            if vals:
                p95 = percentile(vals, 95)
                add(f"event latency, {label} (n={len(vals)})",
                    f"p50 {percentile(vals, 50):.1f} ms, p95 {p95:.1f} ms",
                    f"p95 ≤ {LATENCY_P95_MS:.0f} ms", p95 <= LATENCY_P95_MS)
            elif key == "websocket":
                add(f"event latency, {label}", "not measured: "
                    + (lat.get("websocket_note") or "disabled"))
    scale = res.get("scaleout")
    if scale:
        if scale.get("skipped"):
            add("scale-out (network namespaces)", "skipped: " + scale["skipped"])
        else:
            for hosts, s in scale.get("hosts", {}).items():
                med = median(s["times"])
                add(f"scale-out: {hosts} host(s) x {scale['processes']} process(es), "
                    f"{scale['shape']}", f"{span(s['times'])} s, {s['nodes'] / med:.0f} nodes/s")
    console.print(o)
    for err in res.get("errors", []):
        console.print(f"[red]stage failed[/red]: {err}")
    if judge:
        missed = [name for name, ok in verdicts if ok is False]
        console.print(f"[bold]Targets[/bold]: {sum(1 for _, ok in verdicts if ok)} met, "
                      f"{len(missed)} missed" + (": " + "; ".join(missed) if missed else ""))
    return verdicts


def markdown(res: dict[str, Any]) -> str:
    """Return the shape table and the engine-wide numbers as Markdown (for the docs)."""
    lines = ["| shape | workers | Nexus-Flow s, median (min–max) | nodes (items)/s "
             "| per node (item) ms | × RQ per job | Celery s | Celery ÷ Nexus-Flow "
             "| raw RQ `depends_on` s | target | |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in shape_rows(res):
        extra = f", eff. {r['efficiency']:.2f}" if r["efficiency"] is not None else ""
        verdict = {True: "met", False: "**missed**", None: ""}[r["ok"]]
        lines.append(
            f"| {r['shape']} | {r['workers']} | {span(r['times'])}{extra} | {r['nodes_s']:.0f} "
            f"| {r['per_node_ms']:.3f} | "
            + (f"{r['ratio']:.2f}" if r["ratio"] is not None else "–")
            + f" | {span(r['celery_times']) if r['celery_times'] else '–'} | "
            + (f"{r['vs_celery']:.1f}×" if r["vs_celery"] is not None else "–")
            + f" | {span(r['raw_times']) if r['raw_times'] else '–'} | {r['target']} "
            f"| {verdict} |")
    lines += ["", "| raw RQ workers | no-op jobs | drain s | jobs/s | per job ms |",
              "|---:|---:|---:|---:|---:|"]
    for workers, r in res.get("raw", {}).items():
        d = r.get("drain")
        if d:
            med = median(d["times"])
            lines.append(f"| {workers} | {d['n']} | {span(d['times'])} | {d['n'] / med:.0f} "
                         f"| {med / d['n'] * 1000:.2f} |")
    return "\n".join(lines)
