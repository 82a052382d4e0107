"""bench/soak.sh's verdict, from its samples.csv: each figure's median over
the first minute of the run, over the minute a quarter of the way in (once
allocator and buffers have warmed up under churn), and over the last
minute; whether the end is within the tolerance of each.

usage: soak-summary.py SAMPLES.csv TOLERANCE_PCT LISTENERS DURATION CHURN EXIT
"""
import csv
import statistics
import sys

path, tol, listeners, duration, churn, status = sys.argv[1:]
tol = float(tol)
rows = list(csv.DictReader(open(path)))
run = [r for r in rows if r["phase"] == "run"]
cols = ["rss_bytes", "open_files", "threads", "runtime_tasks", "connections", "listeners"]
print(f"soak: {listeners} listeners, {churn} churn, {duration}; loadtest exit {status}; "
      f"{len(run)} samples in the run")
if len(run) < 24:
    print("too few samples in the run phase to compare its start and end")
    sys.exit(0)


def med(rs, c):
    vals = [float(r[c]) for r in rs if r[c] not in ("", None)]
    return statistics.median(vals) if vals else None


def fmt(c, v):
    return f"{v / 1048576:.1f} MiB" if c == "rss_bytes" else f"{v:.0f}"


# A minute at each point (six samples), as medians: one sample may catch a
# churn or a scrape at a bad moment.
q = len(run) // 4
head, quarter, tail = run[:6], run[q:q + 6], run[-6:]
mins = lambda rs: (int(rs[0]["unix_s"]) - int(run[0]["unix_s"])) / 60
ok = {"start": True, "quarter": True}
print()
print(f"| figure | start (minute 0) | minute {mins(quarter):.0f} | end (minute {mins(tail):.0f}) "
      f"| end vs start | end vs minute {mins(quarter):.0f} |")
print("|---|---|---|---|---|---|")
for c in cols:
    a, m, b = med(head, c), med(quarter, c), med(tail, c)
    if None in (a, m, b):
        print(f"| {c} | {a} | {m} | {b} | n/a | n/a |")
        continue
    cells = []
    for key, base in (("start", a), ("quarter", m)):
        change = (b - base) / base * 100 if base else 0.0
        within = abs(change) <= tol
        if c == "threads":
            # Tokio's blocking pool starts and ends threads by itself (a
            # file read, a DNS lookup): shown, not judged.
            cells.append(f"{change:+.1f}% (not judged)")
            continue
        ok[key] &= within
        cells.append(f"{change:+.1f}% {'ok' if within else 'OVER'}")
    print(f"| {c} | {fmt(c, a)} | {fmt(c, m)} | {fmt(c, b)} | {cells[0]} | {cells[1]} |")
accepted = [float(r["connections_accepted_total"]) for r in run if r["connections_accepted_total"]]
if len(accepted) >= 2:
    print(f"\nconnections accepted during the run: {accepted[-1] - accepted[0]:.0f} "
          f"over {mins(run[-1:]):.0f} min")
before = [r for r in rows if r["phase"] == "before"]
after = [r for r in rows if r["phase"] == "after"]
if before and after:
    b, a = before[0], after[-1]
    print(f"idle before/after: rss {float(b['rss_bytes']) / 1048576:.1f} -> "
          f"{float(a['rss_bytes']) / 1048576:.1f} MiB, open files {b['open_files']} -> "
          f"{a['open_files']}, tasks {b['runtime_tasks']} -> {a['runtime_tasks']}, "
          f"threads {b['threads']} -> {a['threads']}")
print()
print(f"verdict: end vs start: {'every judged figure within ' if ok['start'] else 'NOT every figure within '}"
      f"{tol:g}%; end vs minute {mins(quarter):.0f}: "
      f"{'every judged figure within ' if ok['quarter'] else 'NOT every figure within '}{tol:g}%")
