#!/usr/bin/env python3
"""Run the apps suite three ways and print the comparison table.

For every app built in <build>/apps (the ones with -seq, -pthreads and cdsm binaries):
the sequential build once, then pthreads (-p P) and cdsm (mpiexec -n P) at each P,
each `--reps` times (median kept). Prints per app and P: time, speedup over sequential,
ratio to pthreads at the same P, DSM counters (faults, diffs, messages, bytes) and whether
every run verified with the sequential answer. Writes CSV and a PNG plot (gnuplot).
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

COUNTERS = ["read_faults", "write_faults", "diffs_created", "msgs_sent", "bytes_sent"]


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
    runs = [run(cmd, timeout) for _ in range(reps)]
    best = median_of(runs)
    best["answers"] = {r["answer"] for r in runs}
    return best


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
    hdr = ("%-8s %3s %9s %9s %9s %8s %9s %9s %9s %9s %12s %s" %
           ("app", "P", "seq_s", "pthr_s", "cdsm_s", "speedup", "cdsm/pthr", "faults",
            "diffs", "msgs", "bytes", "answers"))
    print(hdr)
    for app in apps:
        args = extra.get(app, [])
        seq = median_run([os.path.join(appdir, app + "-seq")] + args, a.reps, a.timeout)
        for p in procs:
            pt = median_run([os.path.join(appdir, app + "-pthreads"), "-p", str(p)] + args, a.reps, a.timeout)
            ds = median_run(["mpiexec", "-n", str(p), os.path.join(appdir, app)] + args, a.reps, a.timeout)
            answers = seq["answers"] | pt["answers"] | ds["answers"]
            agree = seq["verified"] and pt["verified"] and ds["verified"] and len(answers) == 1
            faults = None if ds["read_faults"] is None else ds["read_faults"] + (ds["write_faults"] or 0)
            row = {
                "app": app, "procs": p, "seq_s": seq["time"], "pthreads_s": pt["time"], "cdsm_s": ds["time"],
                "speedup": seq["time"] / ds["time"] if seq["time"] and ds["time"] else None,
                "cdsm_over_pthreads": ds["time"] / pt["time"] if pt["time"] and ds["time"] else None,
                "faults": faults, "diffs": ds["diffs_created"], "msgs": ds["msgs_sent"],
                "bytes": ds["bytes_sent"], "verified_same_answer": agree,
            }
            rows.append(row)
            print("%-8s %3d %9s %9s %9s %8s %9s %9s %9s %9s %12s %s" % (
                app, p, fmt(row["seq_s"], ".4f"), fmt(row["pthreads_s"], ".4f"), fmt(row["cdsm_s"], ".4f"),
                fmt(row["speedup"], ".2f"), fmt(row["cdsm_over_pthreads"], ".2f"), fmt(faults, "d"),
                fmt(row["diffs"], "d"), fmt(row["msgs"], "d"), fmt(row["bytes"], "d"),
                "same, verified" if agree else "DIFFER/FAILED"), flush=True)
            if not agree:
                for name, r in (("seq", seq), ("pthreads", pt), ("cdsm", ds)):
                    if not r["verified"]:
                        print("    %s run failed (exit %s):\n%s" % (name, r["rc"], r["out"][-1500:]))
    path = os.path.join(a.outdir, "apps-%s.csv" % stamp)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    print("csv: " + path)
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
