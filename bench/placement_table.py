#!/usr/bin/env python3
"""The placement table: what binding ranks and service threads by the topology changes.

Runs each app with mpiexec at each process count under four placements (CDSM_BIND=none;
core, with the service thread placed by CDSM_BIND_SERVICE=auto; core with it on the
program thread's PU; core with it apart on another core) and prints the median time of --reps runs, its ratio to the
unbound run of the same count (measured in this one invocation, so the machine's noise is
shared), and the placement each run reported; writes CSV and JSON. A count larger than
the node's cores is left unbound by CDSM_BIND=auto, so the default placement changes
nothing there.
"""
import argparse
import os
import re
import statistics
import sys
import time

from apps_table import add_common_args, find_apps, fmt, parse_app_args, run, write_results

PLACEMENTS = [("none", {"CDSM_BIND": "none"}),
              ("core", {"CDSM_BIND": "core", "CDSM_BIND_SERVICE": "auto"}),
              ("core+same", {"CDSM_BIND": "core", "CDSM_BIND_SERVICE": "same"}),
              ("core+apart", {"CDSM_BIND": "core", "CDSM_BIND_SERVICE": "apart"})]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap)
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    appdir = os.path.join(a.build, "apps")
    apps = find_apps(appdir, a.apps or "sor,lu,fft,water", "placement_table")
    extra = parse_app_args(a.args)
    os.makedirs(a.outdir, exist_ok=True)
    rows = []
    print("%-7s %2s %-11s %9s %7s  %s" % ("app", "P", "placement", "time_s", "ratio", "where (rank 0)"))
    for app in apps:
        for p in [int(x) for x in a.procs.split(",")]:
            base = None
            for name, env in PLACEMENTS:
                e = {k: v for k, v in os.environ.items() if not k.startswith("CDSM_")}
                e.update(env, CDSM_LOG_LEVEL="info")
                runs = [run(["mpiexec", "-n", str(p), os.path.join(appdir, app)] + extra.get(app, []), a.timeout, e)
                        for _ in range(a.reps)]
                ok = all(r["verified"] for r in runs) and len({r["answer"] for r in runs}) == 1
                t = statistics.median(r["time"] for r in runs if r["time"] is not None) if ok else None
                if name == "none":
                    base = t
                m = re.search(r"^cdsm\[0\] info: initialised: [^;]*; (.*)$", runs[0]["out"], re.M)
                where = m.group(1) if m else "?"
                row = {"app": app, "procs": p, "placement": name, "time_s": t, "ok": ok,
                       "ratio_to_unbound": t / base if t and base else None, "where": where}
                rows.append(row)
                print("%-7s %2d %-11s %9s %7s  %s" % (app, p, name, fmt(t, ".4f"), fmt(row["ratio_to_unbound"], ".3f"),
                                                     where), flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(a.outdir, "placement-%s" % stamp)
    write_results(path, rows, rows)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
