#!/usr/bin/env python3
"""Turn the JSON lines of one bench run into the Markdown table (median and spread per
metric, peers side by side) and the summary ratios the project tracks.

    python report.py results/<stamp>.jsonl [MORE.jsonl ...] [--md results/<stamp>.md]

Spread = (max - min) / median across repetitions. A ratio is computed within each
repetition (peers of one repetition ran back to back), then summarised the same way.
Only compare figures from one run: the machine is shared and noisy.
"""

import argparse
import json
import statistics
import sys

# (label, path into rec["metrics"], format)
METRICS = [
    ("start: N workers ready (s)", ("start", "start_s"), "{:.2f}"),
    ("idle: client CPU (% of a core)", ("idle", "client_cpu_pct"), "{:.1f}"),
    ("idle: other procs CPU (% of a core)", ("idle", "workers_cpu_pct"), "{:.1f}"),
    ("idle: worker RSS, median (MB)", ("idle", "worker_rss_MB_median"), "{:.1f}"),
    ("throughput: no-op apply_async + wait (tasks/s)", ("throughput", "tasks_per_s"), "{:.0f}"),
    ("throughput: submit loop only (tasks/s)", ("throughput", "submit_per_s"), "{:.0f}"),
    ("throughput: incl. results at client (tasks/s)", ("throughput", "tasks_per_s_with_results"), "{:.0f}"),
    ("throughput: client CPU in window (s)", ("throughput", "client_cpu_s"), "{:.2f}"),
    ("throughput: controller+workers CPU in window (s)", ("throughput", "workers_cpu_s"), "{:.2f}"),
    ("map: chunksize=1 (tasks/s)", ("map", "tasks_per_s"), "{:.0f}"),
    ("automap: automatic chunks (items/s)", ("automap", "tasks_per_s"), "{:.0f}"),
    ("latency: round trip median (us)", ("latency", "median_us"), "{:.0f}"),
    ("latency: round trip p99 (us)", ("latency", "p99_us"), "{:.0f}"),
    ("bandwidth: push (MB/s)", ("bandwidth", "push_MBps"), "{:.0f}"),
    ("bandwidth: pull (MB/s)", ("bandwidth", "pull_MBps"), "{:.0f}"),
    ("bandwidth: push, malloc on huge pages (MB/s)", ("bandwidth_huge_pages", "push_MBps"), "{:.0f}"),
    ("bandwidth: pull, malloc on huge pages (MB/s)", ("bandwidth_huge_pages", "pull_MBps"), "{:.0f}"),
    ("bandwidth: push, dask direct=True (MB/s)", ("bandwidth", "modes", "direct", "push_MBps"), "{:.0f}"),
    ("bandwidth: pull, dask direct=True (MB/s)", ("bandwidth", "modes", "direct", "pull_MBps"), "{:.0f}"),
    ("zmq: echo msgs/s (1000 in flight)", ("throughput", "msgs_per_s"), "{:.0f}"),
    ("zmq: echo bw_bytes, each way (MB/s)", ("bandwidth", "echo_MBps_each_way"), "{:.0f}"),
    ("memcpy bw_bytes, one core (MB/s)", ("memcpy", "MBps"), "{:.0f}"),
]

# (label, numerator (peer, path), denominator (peer, path)); zmq has one "N" (1) and is
# matched to every N of the other peer.
RATIOS = [
    ("hpclaunch round trip / zmq round trip", ("hpclaunch", ("latency", "median_us")),
     ("zmq", ("latency", "median_us"))),
    ("ipp round trip / hpclaunch round trip", ("ipp", ("latency", "median_us")),
     ("hpclaunch", ("latency", "median_us"))),
    ("hpclaunch push / zmq push", ("hpclaunch", ("bandwidth", "push_MBps")),
     ("zmq", ("bandwidth", "push_MBps"))),
    ("hpclaunch pull / zmq pull", ("hpclaunch", ("bandwidth", "pull_MBps")),
     ("zmq", ("bandwidth", "pull_MBps"))),
    ("hpclaunch push / zmq push on huge pages", ("hpclaunch", ("bandwidth", "push_MBps")),
     ("zmq", ("bandwidth_huge_pages", "push_MBps"))),
    ("hpclaunch pull / zmq pull on huge pages", ("hpclaunch", ("bandwidth", "pull_MBps")),
     ("zmq", ("bandwidth_huge_pages", "pull_MBps"))),
]

PEER_ORDER = ["zmq", "hpclaunch", "ipp", "dask", "pool", "parsl"]


def get(d, path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def load(paths):
    """Records of every file; runs of later files are renumbered after earlier ones."""
    recs, offset = [], 0
    for path in paths:
        top = offset
        with open(path) as f:
            for line in f:
                if line.startswith("{"):
                    rec = json.loads(line)
                    rec["run"] = offset + int(rec.get("run") or 1)
                    top = max(top, rec["run"])
                    recs.append(rec)
        offset = top
    return recs


def _summary(values):
    got = [v for v in values if v is not None]
    if not got:
        return None, None
    med = statistics.median(got)
    spread = (max(got) - min(got)) / med if med and len(got) > 1 else None
    return med, spread


def _peer_key(peer):
    return (PEER_ORDER.index(peer) if peer in PEER_ORDER else 99, peer)


def metric_rows(recs):
    runs = sorted({r["run"] for r in recs})
    groups = sorted({(r["peer"], r["n"]) for r in recs}, key=lambda k: (_peer_key(k[0]), k[1]))
    by_key = {(r["peer"], r["n"], r["run"]): r for r in recs}
    rows = []
    for label, path, fmt in METRICS:
        for peer, n in groups:
            vals = [get(by_key.get((peer, n, run), {}).get("metrics", {}), path) for run in runs]
            med, spread = _summary(vals)
            if med is not None:
                rows.append({"metric": label, "peer": peer, "n": n, "runs": vals,
                             "median": med, "spread": spread, "fmt": fmt})
    return rows


def ratio_rows(recs):
    runs = sorted({r["run"] for r in recs})
    by_key = {(r["peer"], r["n"], r["run"]): r for r in recs}
    ns = sorted({r["n"] for r in recs if r["peer"] != "zmq"})
    rows = []
    for label, (top_peer, top_path), (bot_peer, bot_path) in RATIOS:
        for n in ns:
            vals = []
            for run in runs:
                top = by_key.get((top_peer, 1 if top_peer == "zmq" else n, run), {})
                bot = by_key.get((bot_peer, 1 if bot_peer == "zmq" else n, run), {})
                a, b = get(top.get("metrics", {}), top_path), get(bot.get("metrics", {}), bot_path)
                vals.append(a / b if a is not None and b else None)
            med, spread = _summary(vals)
            if med is not None:
                rows.append({"metric": label, "n": n, "runs": vals,
                             "median": med, "spread": spread, "fmt": "{:.2f}"})
    return rows


def _table(rows, nruns, title, with_peer=True):
    peer_hdr = " peer |" if with_peer else ""
    out = [f"| {title} |{peer_hdr} N | median | spread | "
           + " | ".join(f"run {i + 1}" for i in range(nruns)) + " |",
           "|---" * (4 + with_peer + nruns) + "|"]
    last = None
    for r in rows:
        fmt = r["fmt"]
        cells = [fmt.format(v) if v is not None else "–" for v in r["runs"]]
        spread = f"{100 * r['spread']:.0f}%" if r["spread"] is not None else ""
        name = r["metric"] if r["metric"] != last else ""
        last = r["metric"]
        peer = f" {r['peer']} |" if with_peer else ""
        out.append(f"| {name} |{peer} {r['n']} | {fmt.format(r['median'])} | {spread} | "
                   + " | ".join(cells) + " |")
    return out


def one_line(text, limit=400):
    """Errors can carry tracebacks; the table gets one line (the .jsonl keeps them whole)."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    half = limit // 2  # a traceback's cause is at its end: keep both ends
    return text[:half] + " ... " + text[-half:]


def _notes(recs):
    """Skips (with reasons, once per peer) and errors (per run), so nothing fails silently."""
    skips, errors = {}, []
    for r in sorted(recs, key=lambda r: (_peer_key(r["peer"]), r["n"], r["run"])):
        for w, why in (r.get("skipped") or {}).items():
            skips.setdefault((r["peer"], w, why), []).append(f"N={r['n']} run {r['run']}")
        if r.get("errors"):
            errors.append(f"- {r['peer']} N={r['n']} run {r['run']}: "
                          + "; ".join(f"{w}: {one_line(e)}" for w, e in r["errors"].items()))
    out = []
    if skips:
        out += ["", "Skipped:"]
        out += [f"- {peer} {w}: {why}" for (peer, w, why) in skips]
    if errors:
        out += ["", "Errors:"] + errors
    return out


def markdown(recs):
    nruns = len({r["run"] for r in recs}) or 1
    params = next((r["params"] for r in recs if r["peer"] != "zmq" and r.get("params")), {})
    out = _table(metric_rows(recs), nruns, "metric")
    ratios = ratio_rows(recs)
    if ratios:
        out += ["", "Summary ratios (computed within each repetition):", ""]
        out += _table(ratios, nruns, "ratio", with_peer=False)
    hows = {r["peer"]: get(r, ("metrics", "automap", "how")) for r in recs}
    hows = {p: h for p, h in hows.items() if h}
    if hows:
        out += ["", "automap is timed as:"] + [f"- {p}: {h}" for p, h in hows.items()]
    out += _notes(recs)
    if params:
        out += ["", "Params: " + ", ".join(f"{k}={v}" for k, v in params.items())]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("raw", nargs="+", help="JSON-lines files written by bench/drive.py")
    ap.add_argument("--md", help="also write the table to this file")
    args = ap.parse_args()
    md = markdown(load(args.raw))
    if args.md:
        with open(args.md, "w") as f:
            f.write(md)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
