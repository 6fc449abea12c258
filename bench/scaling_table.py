#!/usr/bin/env python3
"""Start-up and barrier time against the rank count (bench/scaling.c), on this host.

For each P in --procs, runs `mpiexec -n P <build>/bench/scaling REPS MPI_REPS` with the
central barrier (CDSM_BARRIER_FANOUT=0), with the library's defaults (the barrier tree
above 9 ranks) and with the tree and CDSM_SPIN_US=0 (waiters sleep at once), --reps times
each (--variants; also "pages": CDSM_NODE_HEAP=0, and NAME=BUILDDIR: another build's
bench/scaling with the defaults, to compare libraries), the variants taking turns, and keeps the
median of each column. Above 2 ranks this
2-core machine is oversubscribed: the table then shows what grows with the rank count
(message bytes per barrier at the manager; start-up's MPI collectives) more than what a
cluster with a core per rank would see. Prints the table; writes CSV, JSON and a PNG
(gnuplot) into --outdir.
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

COLS = ["wall_ms", "init_ms", "mpi_barrier_us", "barrier_us", "barrier_p10_us", "barrier_p90_us", "release_bytes",
        "arrival_bytes", "busiest_bytes"]
ALL_VARIANTS = {"central": {"CDSM_BARRIER_FANOUT": "0"}, "default": {}, "spin0": {"CDSM_SPIN_US": "0"},
                "pages": {"CDSM_NODE_HEAP": "0"}}
VARIANTS = []


def one_run(exe, p, reps, mreps, env, timeout):
    e = dict(os.environ)
    e.update(env)
    t0 = time.monotonic()
    try:
        r = subprocess.run(["mpiexec", "-n", str(p), exe, str(reps), str(mreps)], capture_output=True, text=True,
                           env=e, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    m = re.search(r"^ranks=(\d+) (.*)$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        sys.stderr.write("scaling at %d ranks failed (status %d):\n%s%s" % (p, r.returncode, r.stdout, r.stderr))
        return None
    got = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", m.group(2))}
    got["wall_ms"] = 1000 * (time.monotonic() - t0)  # the whole job: processes' start, init, barriers, end
    return got


def gnuplot(rows, png):
    if not shutil.which("gnuplot"):
        return "gnuplot not installed"
    dat = png[:-4] + ".dat"
    with open(dat, "w") as f:
        for r in rows:
            if r["variant"] == "default":
                c = [x for x in rows if x["ranks"] == r["ranks"] and x["variant"] == "central"]
                f.write("%d %f %f %f %f\n" % (r["ranks"], r["barrier_us"], r["mpi_barrier_us"], r["init_ms"],
                                             c[0]["barrier_us"] if c else float("nan")))
    script = f"""set terminal png size 900,500
set output '{png}'
set logscale xy
set xlabel 'ranks (2 cores: oversubscribed above 2)'
set ylabel 'microseconds (barriers) / milliseconds (start-up)'
set key top left
plot '{dat}' using 1:2 with linespoints title 'cdsm_barrier, default (us)', \\
     '{dat}' using 1:5 with linespoints title 'cdsm_barrier, central (us)', \\
     '{dat}' using 1:3 with linespoints title 'MPI_Barrier (us)', \\
     '{dat}' using 1:4 with linespoints title 'cdsm_init (ms)'
"""
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    return None if r.returncode == 0 else r.stderr.strip()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", default="2,4,8,16,32,64")
    ap.add_argument("--reps", type=int, default=3, help="runs per variant and P (median kept)")
    ap.add_argument("--barriers", type=int, default=300, help="cdsm barriers timed per run")
    ap.add_argument("--mpi-barriers", type=int, default=20, help="MPI barriers timed per run")
    ap.add_argument("--build", default=os.path.join(os.path.dirname(here), "build"))
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--variants", default="central,default,spin0",
                    help="of " + ",".join(ALL_VARIANTS) + " (pages: the page protocol between the ranks, "
                    "CDSM_NODE_HEAP=0), or NAME=BUILDDIR (that build's bench/scaling, defaults)")
    ap.add_argument("-o", "--outdir", default=os.path.join(here, "results"))
    a = ap.parse_args()
    exe = os.path.join(a.build, "bench", "scaling")
    for v in a.variants.split(","):
        name, eq, other = v.partition("=")
        if eq:
            VARIANTS.append((name, {}, os.path.join(other, "bench", "scaling")))
        elif v in ALL_VARIANTS:
            VARIANTS.append((v, ALL_VARIANTS[v], exe))
        else:
            sys.exit("scaling_table: no variant %r (%s, or NAME=BUILDDIR)" % (v, ",".join(ALL_VARIANTS)))
    for _, _, x in VARIANTS:
        if not os.access(x, os.X_OK):
            sys.exit("scaling_table: %s not built (ninja -C %s bench/scaling)"
                     % (x, os.path.dirname(os.path.dirname(x))))
    rows = []
    for p in [int(x) for x in a.procs.split(",")]:
        got = {v: [] for v, _, _ in VARIANTS}
        for i in range(a.reps):
            order = VARIANTS if i % 2 == 0 else VARIANTS[::-1]
            for name, env, x in order:
                r = one_run(x, p, a.barriers, a.mpi_barriers, env, a.timeout)
                if r:
                    got[name].append(r)
        for name, _, _ in VARIANTS:
            if not got[name]:
                continue
            row = {"ranks": p, "variant": name, "runs": len(got[name])}
            for c in COLS:
                vals = [r[c] for r in got[name]]
                row[c] = statistics.median(vals)
                row[c + "_spread"] = (max(vals) - min(vals)) / row[c] if row[c] else 0.0
            rows.append(row)
            print("%3d %-8s job %8.1f ms  init %8.1f ms  cdsm_barrier %9.2f us (p10 %8.2f, p90 %9.2f, spread %.2f)"
                  "  MPI_Barrier %11.2f us"
                  "  rank 0 sends %7.0f B/barrier, last rank %4.0f B, busiest rank moves %7.0f B" %
                  (p, name, row["wall_ms"], row["init_ms"], row["barrier_us"], row["barrier_p10_us"],
                   row["barrier_p90_us"],
                   row["barrier_us_spread"], row["mpi_barrier_us"], row["release_bytes"], row["arrival_bytes"],
                   row["busiest_bytes"]),
                  flush=True)
    os.makedirs(a.outdir, exist_ok=True)
    base = os.path.join(a.outdir, "scaling-" + time.strftime("%Y%m%d-%H%M%S"))
    with open(base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["ranks"])
        w.writeheader()
        w.writerows(rows)
    with open(base + ".json", "w") as f:
        json.dump({"procs": a.procs, "reps": a.reps, "barriers": a.barriers, "rows": rows}, f, indent=1)
    err = gnuplot(rows, base + ".png")
    print("wrote %s.csv, .json%s" % (base, "" if err else ", .png") + ("" if not err else " (png: %s)" % err))


if __name__ == "__main__":
    main()
