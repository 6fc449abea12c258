#!/usr/bin/env python3
"""Run the apps suite five ways and print the comparison table.

For every app built in <build>/apps (the ones with -seq, -pthreads and cdsm binaries):
the sequential build, then at each P pthreads (-p P), cdsm (mpiexec -n P: pages owned by
first touch where the run allows it), cdsm with a spare (mpiexec -n P+1, CDSM_SPARES=1:
pages owned by their home, conversions kept for a replay; the spare sleeps) and cdsm with
every page tracked (CDSM_OWNERSHIP=0), each `--reps` times, the variants taking
turns (median kept, spread = (max - min) / median). Prints per app and P: times, cdsm over
sequential and over pthreads, DSM counters (faults, diffs), the protocol's peak memory
per rank (twins, diffs, notices, records: log_bytes_peak) and whether every run verified
with the sequential answer. Writes CSV, JSON and a PNG plot (gnuplot).
"""
import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

COUNTERS = ["read_faults", "write_faults", "diffs_created", "msgs_sent", "bytes_sent", "log_bytes_peak"]


def parse_result(out):
    """What every app prints: its time, its answer line, and whether it verified."""
    m = re.search(r"^\s*time:\s*([0-9.eE+-]+)\s*s", out, re.M)
    a = re.search(r"^\s*answer:\s*(.*)$", out, re.M)
    return {"time": float(m.group(1)) if m else None, "answer": a.group(1).strip() if a else None,
            "result_verified": re.search(r"^\s*result:\s*VERIFIED", out, re.M) is not None}


def counters(out, names, prefix=r"\s*"):
    """DSM counters from CDSM_STATS output: the first line `<prefix>name value` of each."""
    res = {}
    for c in names:
        m = re.search(r"^%s%s\s+(\d+)\s" % (prefix, c), out, re.M)
        res[c] = int(m.group(1)) if m else None
    return res


def run(cmd, timeout, env=None, names=COUNTERS, prefix=r"\s*"):
    """One run: exit status, wall time, output, parse_result() and the counters asked for."""
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), 124
    res = {"rc": rc, "wall": time.time() - t0, "out": out}
    res.update(parse_result(out))
    res["verified"] = rc == 0 and res["result_verified"]
    res.update(counters(out, names, prefix))
    return res


def median_of(runs):
    """The run closest to the median time of the good ones, with that median time;
    verified only if every run verified."""
    ok = [r for r in runs if r["time"] is not None and r["rc"] == 0]
    best = dict(runs[-1])
    if ok:
        t = statistics.median(r["time"] for r in ok)
        best = dict(min(ok, key=lambda r: abs(r["time"] - t)))
        best["time"] = t
    best["verified"] = all(r["verified"] for r in runs)
    return best


def median_run(cmd, reps, timeout):
    return interleaved([(cmd, None)], reps, timeout)[0]


def interleaved(variants, reps, timeout):
    """Each (cmd, env) variant `reps` times, the variants taking turns (so a noisy moment
    hits them alike); per variant the median run, its answers and the spread of its times
    ((max - min) / median)."""
    runs = [[] for _ in variants]
    for _ in range(reps):
        for k, (cmd, env) in enumerate(variants):
            runs[k].append(run(cmd, timeout, env=env))
    out = []
    for rs in runs:
        best = median_of(rs)
        best["answers"] = {r["answer"] for r in rs}
        ts = [r["time"] for r in rs if r["time"] is not None and r["rc"] == 0]
        best["spread"] = (max(ts) - min(ts)) / best["time"] if ts and best["time"] else None
        out.append(best)
    return out


def write_results(base, rows, doc):
    """rows as base.csv (one column per key of the first row) and doc as base.json; says where."""
    with open(base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    print("csv: %s.csv\njson: %s.json" % (base, base))


def fmt(v, spec, unit=""):
    return format(v, spec) + unit if v is not None else "-"


def gnuplot(script):
    """Run a gnuplot script; None if it worked, else gnuplot's complaint."""
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    return None if r.returncode == 0 else (r.stderr.strip() or "exit status %d" % r.returncode)


def find_apps(appdir, subset, who):
    """Apps built with all three builds (sequential, pthreads, cdsm), or the subset asked for."""
    apps = sorted(f[:-4] for f in os.listdir(appdir) if f.endswith("-seq") and
                  os.path.exists(os.path.join(appdir, f[:-4])) and
                  os.path.exists(os.path.join(appdir, f[:-4] + "-pthreads")))
    if subset:
        want = subset.split(",")
        missing = [x for x in want if x not in apps]
        if missing:
            sys.exit(who + ": not built: " + ", ".join(missing))
        apps = want
    if not apps:
        sys.exit(who + ": no apps built in " + appdir)
    return apps


def add_common_args(ap):
    """Options every apps benchmark takes."""
    ap.add_argument("--build", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--apps", default="", help="comma-separated subset")
    ap.add_argument("--args", action="append", default=[], help="APP=ARGS for one app's options")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("-o", "--outdir", default="bench/results")


def parse_app_args(specs):
    """--args APP=ARGS options into {app: [args]}."""
    extra = {}
    for s in specs:
        name, _, rest = s.partition("=")
        extra[name] = rest.split()
    return extra


def app_rows(app, args, procs, a, appdir):
    """The table's rows of one app: the sequential build, then at each P pthreads, cdsm
    (pages owned by first touch where the run allows it) and cdsm with every page tracked
    (CDSM_OWNERSHIP=0), interleaved."""
    seq = median_run([os.path.join(appdir, app + "-seq")] + args, a.reps, a.timeout)
    tracked_env = dict(os.environ, CDSM_OWNERSHIP="0")
    spare_env = dict(os.environ, CDSM_SPARES="1")
    rows = []
    for p in procs:
        dcmd = ["mpiexec", "-n", str(p), os.path.join(appdir, app)] + args
        scmd = ["mpiexec", "-n", str(p + 1), os.path.join(appdir, app)] + args
        pt, ds, sp, tr = interleaved([([os.path.join(appdir, app + "-pthreads"), "-p", str(p)] + args, None),
                                      (dcmd, None), (scmd, spare_env), (dcmd, tracked_env)], a.reps, a.timeout)
        answers = seq["answers"] | pt["answers"] | ds["answers"] | sp["answers"] | tr["answers"]
        agree = (seq["verified"] and pt["verified"] and ds["verified"] and sp["verified"] and tr["verified"]
                 and len(answers) == 1)
        ratio = lambda x, y: x / y if x and y else None
        mem = lambda r: r["log_bytes_peak"] / p if r["log_bytes_peak"] is not None else None
        rows.append({
            "app": app, "procs": p, "seq_s": seq["time"], "pthreads_s": pt["time"], "cdsm_s": ds["time"],
            "tracked_s": tr["time"], "spare_s": sp["time"], "speedup": ratio(seq["time"], ds["time"]),
            "spare_over_pthreads": ratio(sp["time"], pt["time"]), "spare_spread": sp["spread"],
            "spare_diffs": sp["diffs_created"], "spare_mem_per_rank": mem(sp),
            "cdsm_over_pthreads": ratio(ds["time"], pt["time"]), "tracked_over_pthreads": ratio(tr["time"], pt["time"]),
            "cdsm_over_seq": ratio(ds["time"], seq["time"]), "cdsm_spread": ds["spread"], "tracked_spread": tr["spread"],
            "faults": None if ds["read_faults"] is None else ds["read_faults"] + (ds["write_faults"] or 0),
            "diffs": ds["diffs_created"], "tracked_diffs": tr["diffs_created"], "msgs": ds["msgs_sent"],
            "bytes": ds["bytes_sent"], "mem_per_rank": mem(ds), "tracked_mem_per_rank": mem(tr),
            "verified_same_answer": agree,
        })
        if not agree:
            for name, r in (("seq", seq), ("pthreads", pt), ("cdsm", ds), ("spare", sp), ("tracked", tr)):
                if not r["verified"]:
                    print("    %s run failed (exit %s):\n%s" % (name, r["rc"], r["out"][-1500:]))
    return rows


FORMAT = "%-8s %3s %8s %8s %8s %8s %8s %7s %7s %7s %7s %6s %8s %8s %8s %8s %9s %9s %s"


def print_row(r):
    pct = lambda v: fmt(None if v is None else 100 * v, ".0f", "%")
    kib = lambda v: fmt(None if v is None else v / 1024, ".0f", "K")
    print(FORMAT % (
        r["app"], r["procs"], fmt(r["seq_s"], ".4f"), fmt(r["pthreads_s"], ".4f"), fmt(r["cdsm_s"], ".4f"),
        fmt(r["spare_s"], ".4f"), fmt(r["tracked_s"], ".4f"), fmt(r["cdsm_over_seq"], ".2f"),
        fmt(r["cdsm_over_pthreads"], ".2f"), fmt(r["spare_over_pthreads"], ".2f"), fmt(r["tracked_over_pthreads"], ".2f"),
        pct(r["cdsm_spread"]), fmt(r["faults"], "d"), fmt(r["diffs"], "d"), fmt(r["spare_diffs"], "d"),
        fmt(r["tracked_diffs"], "d"), kib(r["mem_per_rank"]), kib(r["tracked_mem_per_rank"]),
        "same, verified" if r["verified_same_answer"] else "DIFFER/FAILED"), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--reps", type=int, default=3)
    add_common_args(ap)
    a = ap.parse_args()

    appdir = os.path.join(a.build, "apps")
    apps = find_apps(appdir, a.apps, "apps_table")
    extra = parse_app_args(a.args)
    procs = [int(p) for p in a.procs.split(",")]
    os.makedirs(a.outdir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    print(FORMAT % ("app", "P", "seq_s", "pthr_s", "cdsm_s", "spare_s", "track_s", "c/seq", "c/pthr", "s/pthr",
                    "t/pthr", "spread", "faults", "diffs", "s_diffs", "t_diffs", "mem/rank", "t_mem/rk", "answers"))
    for app in apps:
        for row in app_rows(app, extra.get(app, []), procs, a, appdir):
            rows.append(row)
            print_row(row)
    path = os.path.join(a.outdir, "apps-%s.csv" % stamp)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    with open(path[:-4] + ".json", "w") as f:
        json.dump({"procs": procs, "reps": a.reps, "args": a.args, "rows": rows}, f, indent=1)
    print("csv: " + path + "\njson: " + path[:-4] + ".json")
    png = plot(rows, procs, os.path.join(a.outdir, "apps-%s" % stamp))
    if png:
        print("png: " + png)
    return 0 if all(r["verified_same_answer"] for r in rows) else 1


def plot(rows, procs, base):
    """cdsm time over pthreads time per app, one bar group per P (gnuplot, if present)."""
    if not shutil.which("gnuplot"):
        print("png: skipped (gnuplot not installed: apt-get install gnuplot-nox)")
        return None
    apps = sorted({r["app"] for r in rows})
    data = base + ".dat"
    with open(data, "w") as f:
        f.write("app " + " ".join("P%d" % p for p in procs) + "\n")
        for app in apps:
            vals = []
            for p in procs:
                r = next((r for r in rows if r["app"] == app and r["procs"] == p), None)
                v = r["cdsm_over_pthreads"] if r else None
                vals.append("%.4f" % v if v else "NaN")
            f.write(app + " " + " ".join(vals) + "\n")
    png = base + ".png"
    script = f"""
set terminal pngcairo size 900,500
set output '{png}'
set title 'cdsm time / pthreads time (same process count; 1 = parity)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y
set ylabel 'ratio (log scale)'
set key top left
set grid ytics
plot '{data}' using 2:xtic(1) title columnheader(2){''.join(f", '' using {i + 2} title columnheader({i + 2})" for i in range(1, len(procs)))}, 1 with lines lw 2 lc rgb 'black' title 'parity'
"""
    err = gnuplot(script)
    if err:
        print("png: gnuplot failed: " + err)
        return None
    return png


if __name__ == "__main__":
    sys.exit(main())
