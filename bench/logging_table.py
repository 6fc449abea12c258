#!/usr/bin/env python3
"""The cost of causal logging and checkpoints, per app (issue 4's benchmark).

Every app built in <build>/apps runs under mpiexec at P ranks in four modes, interleaved
within each repetition in a rotating order so that the noise of this machine hits them
alike (median kept):
  off       CDSM_LOGGING=0
  log       CDSM_LOGGING=1 (the default)
  log+ckpt  logging and checkpoints at the default policy (CDSM_CKPT_DIR set, nothing else)
  log+ckpt10  logging and a checkpoint every 10 barriers (a policy much denser than the
            default, to show what checkpoints cost when they are taken)
Prints per app: time per mode, overhead in percent of the 'off' time, determinant log and
diff log bytes per rank, piggyback bytes per protocol message, checkpoints taken, mean file
size, write time (writer thread) and stall (program thread) per checkpoint, and whether
every run verified. Writes CSV and JSON to the output folder. Goals (issue 4): median
logging overhead <= 3%, none above 8%; checkpoints at the default policy <= 5% more.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from apps_table import add_common_args, find_apps, fmt, median_of, parse_app_args, run, write_results

STATS = ["msgs_sent", "barriers", "det_logged", "det_bytes_peak", "piggyback_bytes", "log_bytes_peak",
         "ckpts", "ckpts_full", "ckpt_bytes", "ckpt_write_us", "ckpt_stall_us", "gc_runs"]
MODES = [
    ("off", {"CDSM_LOGGING": "0"}, False),
    ("log", {"CDSM_LOGGING": "1"}, False),
    ("log+ckpt", {"CDSM_LOGGING": "1"}, True),
    ("log+ckpt10", {"CDSM_LOGGING": "1", "CDSM_CKPT_BARRIERS": "10"}, True),
]


def pct(a, b):
    return 100.0 * (a - b) / b if a is not None and b else None


def div(a, b):
    return a / b if a is not None and b else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--np", type=int, default=int(os.environ.get("NP", "2")))
    ap.add_argument("--reps", type=int, default=5)
    add_common_args(ap)
    a = ap.parse_args()

    appdir = os.path.join(a.build, "apps")
    apps = find_apps(appdir, a.apps, "logging_table")
    extra = parse_app_args(a.args)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CDSM_")}
    base_env["CDSM_STATS"] = "2"
    os.makedirs(a.outdir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    scratch = tempfile.mkdtemp(prefix="cdsm-bench-ckpt-")
    rows = []
    print("P=%d, %d repetitions, medians; overhead relative to logging off in the same run" % (a.np, a.reps))
    print("%-7s %8s %8s %8s %8s %7s %7s %7s %9s %9s %7s %6s %9s %8s %8s %s" % (
        "app", "off_s", "log_s", "ckpt_s", "ckpt10_s", "log%", "ckpt%", "ckpt10%", "det_B/rk",
        "diff_B/rk", "pgb_B/m", "ckpts", "ckpt_KiB", "write_ms", "stall_ms", "verified"))
    try:
        for app in apps:
            cmd = ["mpiexec", "-n", str(a.np), os.path.join(appdir, app)] + extra.get(app, [])
            runs = {m[0]: [] for m in MODES}
            for rep in range(a.reps):
                # Rotate the order: whichever mode runs first or after the checkpointing one
                # (file system work) is not always the same.
                for name, env_add, ckpt in MODES[rep % len(MODES):] + MODES[:rep % len(MODES)]:
                    env = dict(base_env, **env_add)
                    if ckpt:
                        env["CDSM_CKPT_DIR"] = scratch
                    runs[name].append(run(cmd, a.timeout, env, STATS, r"cdsm\[all\] "))
                    if ckpt:  # each run's files go; the disk stays clean between runs
                        for d in os.listdir(scratch):
                            shutil.rmtree(os.path.join(scratch, d), ignore_errors=True)
            med = {k: median_of(v) for k, v in runs.items()}
            off, log, ck, ck10 = med["off"], med["log"], med["log+ckpt"], med["log+ckpt10"]
            nck = ck10["ckpts"] or 0
            row = {
                "app": app, "procs": a.np,
                "off_s": off["time"], "log_s": log["time"], "log_ckpt_s": ck["time"], "log_ckpt10_s": ck10["time"],
                "log_overhead_pct": pct(log["time"], off["time"]),
                "ckpt_overhead_pct": pct(ck["time"], off["time"]),
                "ckpt10_overhead_pct": pct(ck10["time"], off["time"]),
                "det_bytes_peak_per_rank": div(log["det_bytes_peak"], a.np),
                "diff_log_bytes_peak_per_rank": div(log["log_bytes_peak"], a.np),
                "piggyback_bytes_per_msg": div(log["piggyback_bytes"], log["msgs_sent"]),
                "barriers_per_rank": div(log["barriers"], a.np),
                "ckpts_default_policy": ck["ckpts"],
                "ckpts_every10": nck,
                "ckpt_file_kib": div(ck10["ckpt_bytes"], nck * 1024) if nck else None,
                "ckpt_write_ms": div(ck10["ckpt_write_us"], nck * 1000) if nck else None,
                "ckpt_stall_ms": div(ck10["ckpt_stall_us"], nck * 1000) if nck else None,
                "verified": all(m["verified"] for m in med.values()),
            }
            rows.append(row)
            print("%-7s %8s %8s %8s %8s %7s %7s %7s %9s %9s %7s %6s %9s %8s %8s %s" % (
                app, fmt(row["off_s"], ".4f"), fmt(row["log_s"], ".4f"), fmt(row["log_ckpt_s"], ".4f"),
                fmt(row["log_ckpt10_s"], ".4f"), fmt(row["log_overhead_pct"], "+.1f"),
                fmt(row["ckpt_overhead_pct"], "+.1f"), fmt(row["ckpt10_overhead_pct"], "+.1f"),
                fmt(row["det_bytes_peak_per_rank"], ".0f"), fmt(row["diff_log_bytes_peak_per_rank"], ".0f"),
                fmt(row["piggyback_bytes_per_msg"], ".2f"), "%s/%s" % (fmt(ck["ckpts"], "d"), fmt(nck, "d")),
                fmt(row["ckpt_file_kib"], ".0f"), fmt(row["ckpt_write_ms"], ".2f"), fmt(row["ckpt_stall_ms"], ".2f"),
                "yes" if row["verified"] else "NO"), flush=True)
            if not row["verified"]:
                for name, m in med.items():
                    if not m["verified"]:
                        print("    %s run failed (exit %s):\n%s" % (name, m["rc"], m["out"][-1500:]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lo = [r["log_overhead_pct"] for r in rows if r["log_overhead_pct"] is not None]
    co = [r["ckpt_overhead_pct"] - r["log_overhead_pct"] for r in rows
          if r["ckpt_overhead_pct"] is not None and r["log_overhead_pct"] is not None]
    if lo:
        print("logging overhead: median %+.1f%%, max %+.1f%% (goal: median <= 3%%, none above 8%%)" %
              (statistics.median(lo), max(lo)))
    if co:
        print("checkpoints at the default policy on top of logging: median %+.1f%%, max %+.1f%% (goal <= 5%%)" %
              (statistics.median(co), max(co)))
    print("(ckpts column: checkpoints taken at the default policy / every 10 barriers, summed over ranks;"
          " file size, write and stall times are per checkpoint of the every-10-barriers run)")
    base = os.path.join(a.outdir, "logging-%s" % stamp)
    write_results(base, rows, {"procs": a.np, "reps": a.reps, "rows": rows})
    return 0 if all(r["verified"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
