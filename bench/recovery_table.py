#!/usr/bin/env python3
"""The recovery table: bench/recover_run.py's experiment for each app and kill point.

Prints one row per (app, victim, kill point) with detection, restore, replay and total
recovery times, the failure-free time of the replayed work and the replay ratio, the
survivors' slowdown and a whole-job restart's time; writes CSV, JSON and a PNG plot
(gnuplot). Goals (issue 5): detection under 100 ms; replay at most 0.8x the failure-free
time of the same intervals; total recovery far below a whole-job restart.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from apps_table import add_common_args, find_apps, fmt, gnuplot, parse_app_args
from recover_run import run_experiment

SUPPORTED = ["sor", "lu", "fft", "radix", "is", "barnes", "water", "tsp"]
# The second way back: the same program in resume mode (cdsm_resume), checkpointing at its
# resume points; its replacement restores the last checkpoint instead of starting over.
VARIANTS = {"sor-resume": ("sor", ["-r"], {"CDSM_CKPT_BARRIERS": "10"})}
COLS = ["detection_ms", "restore_s", "replay_s", "replayed_barriers", "replayed_grants", "replayed_work_s", "replay_ratio",
        "recovery_s", "failure_free_s", "run_s", "slowdown", "whole_job_restart_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap)
    ap.add_argument("--np", type=int, default=3)
    ap.add_argument("--victims", default="1,0")
    ap.add_argument("--at", default="0.3,0.7", help="kill points, fractions of the failure-free time")
    a = ap.parse_args()
    appdir = os.path.join(a.build, "apps")
    apps = [x for x in find_apps(appdir, a.apps, "recovery_table") if x in SUPPORTED]
    extra = parse_app_args(a.args)
    runs = []  # (name, binary, args, environment)
    for app in apps:
        runs.append((app, app, extra.get(app, []), {}))
        for name, (base, vargs, venv) in VARIANTS.items():
            if base == app:
                runs.append((name, base, extra.get(app, []) + vargs, venv))
    os.makedirs(a.outdir, exist_ok=True)
    ckroot = tempfile.mkdtemp(prefix="cdsm-bench-ckpt-")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    print("P=%d working ranks + 1 spare, srun --mpi=pmi2 on the one-node Slurm; times in s unless marked" % a.np)
    print("%-7s %2s %4s %8s %7s %7s %5s %6s %8s %6s %8s %8s %8s %6s %9s %s" % (
        "app", "rk", "at", "detect_ms", "restore", "replay", "bars", "grants", "work_ff", "ratio", "recovery", "ff_run",
        "run", "slow", "restart", "answer"))
    for app, binary, args, venv in runs:
        for victim in [int(v) for v in a.victims.split(",")]:
            for at in [float(x) for x in a.at.split(",")]:
                env = dict(venv, CDSM_CKPT_DIR=ckroot) if venv else {}
                try:
                    r = run_experiment(os.path.join(appdir, binary), a.np, 1, victim, at, args, a.timeout, env)
                except Exception as e:  # one failed experiment must not hide the others
                    print("%-7s %2d %4.1f FAILED: %s" % (app, victim, at, str(e)[-300:]))
                    rows.append({"app": app, "victim": victim, "fraction": at, "ok": False})
                    continue
                ok = r["killed"] and r["identical"] and r["verified"]
                row = {"app": app, "victim": victim, "fraction": at, "ok": ok}
                row.update({c: r[c] for c in COLS})
                rows.append(row)
                print("%-7s %2d %4.1f %8s %7s %7s %5s %6s %8s %6s %8s %8s %8s %6s %9s %s" % (
                    app, victim, at, fmt(r["detection_ms"], ".1f"), fmt(r["restore_s"], ".3f"),
                    fmt(r["replay_s"], ".3f"), fmt(r["replayed_barriers"], "d"), fmt(r["replayed_grants"], "d"),
                    fmt(r["replayed_work_s"], ".3f"),
                    fmt(r["replay_ratio"], ".2f"), fmt(r["recovery_s"], ".3f"), fmt(r["failure_free_s"], ".3f"),
                    fmt(r["run_s"], ".3f"), fmt(r["slowdown"], ".2f"), fmt(r["whole_job_restart_s"], ".3f"),
                    "identical, verified" if ok else "NOT OK"), flush=True)
    shutil.rmtree(ckroot, ignore_errors=True)
    good = [r for r in rows if r.get("ok")]
    if good:
        det = [r["detection_ms"] for r in good if r["detection_ms"] is not None]
        rat = [r["replay_ratio"] for r in good if r["replay_ratio"] is not None]
        if det:
            print("detection: median %.1f ms, max %.1f ms (goal < 100 ms)" % (statistics.median(det), max(det)))
        if rat:
            print("replay / failure-free time of the same work: median %.2f, max %.2f (goal <= 0.8)" %
                  (statistics.median(rat), max(rat)))
        rec = [(r["recovery_s"], r["whole_job_restart_s"]) for r in good if r["recovery_s"] and r["whole_job_restart_s"]]
        if rec:
            print("total recovery / whole-job restart: median %.2f" % statistics.median(x / y for x, y in rec))
    base = os.path.join(a.outdir, "recovery-%s" % stamp)
    keys = ["app", "victim", "fraction", "ok"] + COLS
    with open(base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in keys})
    with open(base + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    print("csv: %s.csv\njson: %s.json" % (base, base))
    png = plot(good, base)
    if png:
        print("png: " + png)
    return 0 if rows and all(r["ok"] for r in rows) else 1


def plot(rows, base):
    """Total recovery against a whole-job restart, per experiment (gnuplot, if present)."""
    if not rows or not shutil.which("gnuplot"):
        return None
    data = base + ".dat"
    with open(data, "w") as f:
        f.write("run recovery restart\n")
        for r in rows:
            f.write("%s-r%d-%.0f%% %.4f %.4f\n" % (r["app"], r["victim"], 100 * r["fraction"],
                                                   r["recovery_s"] or 0, r["whole_job_restart_s"] or 0))
    png = base + ".png"
    script = f"""
set terminal pngcairo size 1000,500
set output '{png}'
set title 'online recovery (kill -> live) vs whole-job restart, seconds'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -45
set ylabel 'seconds'
set key top left
set grid ytics
plot '{data}' using 2:xtic(1) title 'online recovery', '' using 3 title 'whole-job restart'
"""
    return None if gnuplot(script) else png


if __name__ == "__main__":
    sys.exit(main())
