#!/usr/bin/env python3
"""Turns bench-scale.tsv (hack/bench-scale.sh) into the Markdown table, the fitted
per-pod costs and an SVG plot of memory against cluster size.

Usage: bench-scale-report.py RESULTS.tsv PLOT.svg
"""
import csv
import sys


def load(path):
    with open(path) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        for key in ("nodes", "pods", "scope_pct"):
            row[key] = int(row[key])
        for key in ("ready_s", "rss_mib", "peak_mib", "apiserver_cpu_s"):
            row[key] = float(row[key])
        # Runs before the column existed have no pod-cache time.
        row["pods_cached_s"] = float(row["pods_cached_s"]) if row.get("pods_cached_s") else None
    return rows


def table(rows):
    print("| nodes | pods | in scope | ready (s) | every pod cached (s) | RSS steady (MiB) | peak incl. startup (MiB) "
          "| API server CPU while the operator lists (s) | CPU per 1,000 events in scope (ms) "
          "| CPU per 1,000 events out of scope (ms) | newly labelled namespace counted (s) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        cached = f"{r['pods_cached_s']:.2f}" if r["pods_cached_s"] is not None else "—"
        print(f"| {r['nodes']:,} | {r['pods']:,} | {r['scope_pct']} % | {r['ready_s']:.2f} | {cached} "
              f"| {r['rss_mib']:.1f} | {r['peak_mib']:.1f} | {r['apiserver_cpu_s']:.2f} "
              f"| {r['cpu_ms_per_1000_in'] or '—'} | {r['cpu_ms_per_1000_out'] or '—'} "
              f"| {r['namespace_count_s'] or '—'} |")


def slope(points):
    """Least-squares slope and intercept of (x, y) points."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0, my
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return b, my - b * mx


def fit(rows):
    """Per-pod costs in KiB, from the 500-node points: the 10 % series gives
    0.1 in + 0.9 out per pod; the 0 % and 100 % points at one size give in - out."""
    series = [(r["pods"], r["rss_mib"]) for r in rows if r["nodes"] == 500 and r["scope_pct"] == 10]
    ends = {r["scope_pct"]: r for r in rows if r["nodes"] == 500 and r["scope_pct"] in (0, 100)}
    if len(series) < 2 or len(ends) < 2:
        return None
    mixed, base = slope(series)
    pods = ends[100]["pods"]
    difference = (ends[100]["rss_mib"] - ends[0]["rss_mib"]) / pods
    out = mixed - 0.1 * difference
    inside = out + difference
    return {"base_mib": base, "in_kib": inside * 1024, "out_kib": out * 1024}


def plot(rows, path):
    width, height, left, bottom, top, right = 640, 400, 60, 50, 20, 160
    ten = [r for r in rows if r["scope_pct"] == 10]
    max_pods = max(r["pods"] for r in ten)
    max_mib = max(max(r["peak_mib"] for r in ten), 64) * 1.1

    def x(p):
        return left + p / max_pods * (width - left - right)

    def y(m):
        return height - bottom - m / max_mib * (height - bottom - top)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<line x1="{left}" y1="{y(0)}" x2="{width - right}" y2="{y(0)}" stroke="black"/>',
           f'<line x1="{left}" y1="{y(0)}" x2="{left}" y2="{top}" stroke="black"/>',
           f'<text x="{(left + width - right) / 2}" y="{height - 10}" text-anchor="middle">'
           f'pods in the cluster (10 % in scope)</text>',
           f'<text x="15" y="{(height - bottom + top) / 2}" transform="rotate(-90 15 '
           f'{(height - bottom + top) / 2})" text-anchor="middle">operator memory (MiB)</text>']
    for tick in range(0, max_pods + 1, 5000):
        out.append(f'<text x="{x(tick)}" y="{y(0) + 16}" text-anchor="middle">{tick:,}</text>')
    for tick in range(0, int(max_mib) + 1, 16):
        out.append(f'<text x="{left - 6}" y="{y(tick) + 4}" text-anchor="end">{tick}</text>')
        out.append(f'<line x1="{left}" y1="{y(tick)}" x2="{width - right}" y2="{y(tick)}" '
                   f'stroke="#eee"/>')
    for limit, label in ((32, "target 32 MiB at 10,000"), (64, "target 64 MiB at 30,000")):
        out.append(f'<line x1="{left}" y1="{y(limit)}" x2="{width - right}" y2="{y(limit)}" '
                   f'stroke="#c00" stroke-dasharray="4 4"/>')
        out.append(f'<text x="{width - right + 4}" y="{y(limit) + 4}" fill="#c00">{label}</text>')
    colours = {500: "#1f77b4", 2000: "#2ca02c"}
    legend = 0
    for nodes in sorted({r["nodes"] for r in ten}):
        for key, dash, name in (("rss_mib", "", "steady"), ("peak_mib", "6 3", "peak")):
            pts = sorted((r["pods"], r[key]) for r in ten if r["nodes"] == nodes)
            path_d = " ".join(f"{x(p):.1f},{y(m):.1f}" for p, m in pts)
            colour = colours.get(nodes, "#555")
            out.append(f'<polyline points="{path_d}" fill="none" stroke="{colour}" '
                       f'stroke-width="2" stroke-dasharray="{dash}"/>')
            for p, m in pts:
                out.append(f'<circle cx="{x(p):.1f}" cy="{y(m):.1f}" r="3" fill="{colour}"/>')
            out.append(f'<line x1="{width - right + 4}" y1="{top + 40 + legend * 16}" '
                       f'x2="{width - right + 24}" y2="{top + 40 + legend * 16}" stroke="{colour}" '
                       f'stroke-width="2" stroke-dasharray="{dash}"/>')
            out.append(f'<text x="{width - right + 28}" y="{top + 44 + legend * 16}">'
                       f'{nodes:,} nodes, {name}</text>')
            legend += 1
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    rows = load(sys.argv[1])
    table(rows)
    costs = fit(rows)
    if costs:
        print(f"\nFitted (500 nodes, steady RSS): {costs['base_mib']:.1f} MiB base, "
              f"{costs['in_kib']:.2f} KiB per pod in scope, {costs['out_kib']:.2f} KiB per pod "
              f"out of scope.")
    plot(rows, sys.argv[2])
    print(f"\nplot: {sys.argv[2]}")


if __name__ == "__main__":
    main()
