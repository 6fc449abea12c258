#!/usr/bin/env python3
"""A/B of one setting: every app at P ranks under each value of a CDSM_* variable, the
values taking turns (a noisy moment hits them alike), plus pthreads at P for scale.
Prints per app the median time of each value with its spread ((max - min) / median),
the ratio of each value's median to the first's, cdsm over pthreads, and whether every
run verified; writes CSV and JSON.

    python3 bench/ab_env.py --var CDSM_SHM_DIFFS --values 0,32M --procs 2 --reps 5
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps_table as at  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    at.add_common_args(ap)
    ap.add_argument("--var", required=True, help="the CDSM_* variable")
    ap.add_argument("--values", required=True, help="comma-separated values; the first is the baseline")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    values = a.values.split(",")
    appdir = os.path.join(a.build, "apps")
    rows = []
    print("# %s at %d ranks, values %s, %d interleaved runs each (median, spread)" % (a.var, a.procs, values, a.reps))
    for app in at.find_apps(appdir, a.apps, "ab_env"):
        args = at.parse_app_args(a.args).get(app, [])
        variants = [([os.path.join(appdir, app + "-pthreads"), "-p", str(a.procs)] + args, None)]
        for v in values:
            env = dict(os.environ, **{a.var: v})
            variants.append((["mpiexec", "-n", str(a.procs), os.path.join(appdir, app)] + args, env))
        res = at.interleaved(variants, a.reps, a.timeout)
        pt, base = res[0], res[1]
        row = {"app": app, "procs": a.procs, "pthreads_s": pt["time"]}
        line = "%-7s pthreads %s" % (app, at.fmt(pt["time"], ".4f"))
        for v, r in zip(values, res[1:]):
            row.update({"%s_s" % v: r["time"], "%s_spread" % v: r["spread"], "%s_verified" % v: r["verified"]})
            ratio = r["time"] / base["time"] if r["time"] and base["time"] else None
            xpt = r["time"] / pt["time"] if r["time"] and pt["time"] else None
            line += "  %s=%s %s (±%s) /first %s xpt %s" % (a.var[5:], v, at.fmt(r["time"], ".4f"),
                                                          at.fmt(r["spread"], ".0%"), at.fmt(ratio, ".2f"),
                                                          at.fmt(xpt, ".1f"))
            line += "" if r["verified"] else " NOT VERIFIED"
        print(line, flush=True)
        rows.append(row)
    base = os.path.join(a.outdir, "ab-%s-%s" % (a.var.lower(), time.strftime("%Y%m%d-%H%M%S")))
    at.write_results(base, rows, {"var": a.var, "values": values, "procs": a.procs, "reps": a.reps, "rows": rows})


if __name__ == "__main__":
    main()
