#!/usr/bin/env python3
"""The apps and recovery tables under added network latency, on the simulated cluster.

Brings up cmd/cdsm-simcluster (4 node namespaces on cdsm-netsim, its own state folder
under /tmp) once, then, for the one-way delays of the switch (--delays, microseconds):
  * every app of --apps failure-free, --reps times at each delay, the delays interleaved
    (each repetition runs every delay in turn), 6 ranks on 3 nodes (2 per node, block:
    sim-n1..sim-n3): the median of the app's own `time:`, the wall time of srun, whether
    every run printed `result: VERIFIED` and gave the answer of the 0 us runs;
  * the recovery experiments of bench/recover_run.py with 2 spares on sim-n4: rank
    --victim killed (kill -9) at --at of the failure-free time, for each of
    --recovery-apps; and a node's ranks (--node-victims, sim-n2's two) killed at once, for
    each of --node-apps. A lock program cannot survive two ranks lost at once (grants
    between them are logged nowhere else): such a run ends with the library's error and
    is recorded as "not survivable", not as a failure of the benchmark.
Every figure is also given as a ratio to the same row at the first delay (0 us).
--app-env NAME=VALUE (repeatable) gives the app table's runs a library setting (the
recovery experiments keep the defaults), e.g. CDSM_RMA=1 to compare one-sided access
across the hosts with the messages of a run without it.
Every run is bounded (--timeout); a run that hits it is recorded as hung. For each run
the table records srun's exit status and whether the library's finalize watchdog fired
("MPI_Finalize did not return": the known hang of MPICH/UCX endpoint close over TCP,
bounded by CDSM_FINALIZE_TIMEOUT), and prints a summary of both.
Writes bench/results/latency-<stamp>.csv (one row per table row, column `table`) and
.json (rows, per-run details, switch counters, settings). Needs root and Slurm.
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from apps_table import fmt, parse_result, write_results  # noqa: E402
from recover_run import clean_env, run_experiment  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM = os.path.join(ROOT, "cmd", "cdsm-simcluster")
# Sizes for ~1-4 s per failure-free run on 6 ranks over 3 simulated nodes at 0 us.
DEFAULT_ARGS = {
    "sor": "-n 2050 -i 40", "lu": "-n 1536", "fft": "-m 20", "radix": "-n 1048576",
    "water": "-n 4000 -s 20", "barnes": "-n 16384 -s 4", "is": "-n 4194304 -i 10", "tsp": "-n 14",
}
REF_LAYOUT = ["-N3", "--ntasks-per-node=2", "-m", "block", "-w", "sim-n1,sim-n2,sim-n3"]
RUN_LAYOUT = ["-N4", "--ntasks-per-node=2", "-m", "block", "-w", "sim-n1,sim-n2,sim-n3,sim-n4", "--no-kill"]
WATCHDOG = "MPI_Finalize did not return"
NOT_SURVIVABLE = re.compile(r"cannot survive losing|not survived|no logged grant")


class Cluster:
    """The simulated cluster, with its own state folder; every call bounded in time."""

    def __init__(self, netsim, nodes=4):
        self.dir = tempfile.mkdtemp(prefix="cdsm-latency-sim-")
        self.env = dict(os.environ, CDSM_SIM_DIR=self.dir, CDSM_NETSIM=netsim)
        self.netsim = netsim
        self.nodes = nodes
        self.up_done = False

    def sim(self, *args, timeout=60, check=True):
        p = subprocess.run([SIM] + [str(a) for a in args], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError("cdsm-simcluster %s: exit %d: %s" % (" ".join(map(str, args)), p.returncode,
                                                                  (p.stdout + p.stderr)[-1000:]))
        return p.stdout

    def up(self):
        self.up_done = True
        self.sim("up", self.nodes, timeout=120)

    def down(self):
        if self.up_done:
            try:
                self.sim("down", timeout=120, check=False)
            except subprocess.TimeoutExpired:
                print("latency_table: cdsm-simcluster down did not end within 120 s", file=sys.stderr)
            self.up_done = False

    def launcher(self, limit):
        """srun in the login namespace, under a timeout there (srun gets SIGTERM, then KILL)."""
        return ["env", "CDSM_SIM_DIR=" + self.dir, "CDSM_NETSIM=" + self.netsim, SIM, "login",
                "timeout", "-k", "10", str(limit)]

    def stats(self):
        out = self.sim("stats", timeout=30, check=False)
        res = {}
        for line in out.splitlines():
            f = line.split()
            if len(f) == 2:
                try:
                    res[f[0]] = float(f[1]) if "." in f[1] else int(f[1])
                except ValueError:
                    pass
        return res

    def cancel_all(self):
        """Any job left by a run that hit its time limit."""
        try:
            self.sim("login", "scancel", "--user", "root", timeout=30, check=False)
        except subprocess.TimeoutExpired:
            pass


def watchdog_count(out):
    return sum(1 for line in (out or "").splitlines() if WATCHDOG in line)


def run_bounded(cmd, timeout, env, inner):
    """One run in its own process group, killed as a group past timeout: (rc, wall, out, hung).
    inner: the limit of the timeout in the login namespace (srun's status 137 alone is no
    sign: it is also that of a task killed with kill -9)."""
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    hung = False
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        hung = True
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = p.communicate()
    out = out.decode(errors="replace")
    rc = p.returncode
    wall = time.time() - t0
    # The inner timeout (in the login namespace) exits 124 (SIGTERM) or 137 (SIGKILL).
    if rc == 124 or wall >= inner - 0.5:
        hung = True
    return rc, wall, out, hung


def app_runs(cl, appdir, app, args, reps, timeout, np_, env_extra=None):
    runs = []
    inner = max(10, timeout - 15)
    for i in range(reps):
        cmd = cl.launcher(inner) + ["srun", "-O", "--mpi=pmi2", "-n", str(np_), "-J", "lat-" + app] + REF_LAYOUT + \
            [os.path.join(appdir, app)] + args
        rc, wall, out, hung = run_bounded(cmd, timeout, clean_env(env_extra or {}), inner)
        r = parse_result(out)
        runs.append({"rep": i, "srun_exit": rc, "wall_s": wall, "time_s": r["time"], "answer": r["answer"],
                     "verified": rc == 0 and r["result_verified"], "watchdog_procs": watchdog_count(out),
                     "hung": hung, "tail": out[-1500:] if (rc != 0 or not r["result_verified"]) else ""})
        if hung:
            cl.cancel_all()
    return runs


def recovery(cl, appdir, app, args, victims, at, timeout, np_, spares):
    """One experiment; never raises: a failure is a row with an outcome."""
    v = victims[0] if len(victims) == 1 else list(victims)
    row = {"app": app, "victims": ",".join(map(str, victims)), "fraction": at}
    inner = max(10, timeout - 15)
    try:
        r = run_experiment(os.path.join(appdir, app), np_, spares, v, at, args, timeout,
                           env_extra={}, launcher=cl.launcher(inner),
                           ref_extra=["-J", "lat-ref-" + app] + REF_LAYOUT,
                           run_extra=["-J", "lat-rec-" + app] + RUN_LAYOUT, keep_ref_output=True, ref_spares=False)
    except Exception as e:  # the failure-free run failed or the run outlived the outer bound
        msg = str(e)
        cl.cancel_all()
        row.update({"outcome": "hung" if "did not end" in msg or isinstance(e, subprocess.TimeoutExpired)
                    else "failure-free run failed", "error": msg[-1500:]})
        return row, None
    out = r["output"]
    ok = r["killed"] and r["identical"] and r["verified"]
    if ok:
        outcome = "recovered"
    elif r["srun_exit"] == 124 or r["run_wall_s"] >= inner - 0.5:
        outcome = "hung"  # srun's 137 alone is the killed task's status
    elif NOT_SURVIVABLE.search(out):
        outcome = "not survivable"
    elif not r["killed"]:
        outcome = "not killed (ended before the kill point)"
    else:
        outcome = "FAILED"
    if outcome in ("hung",):
        cl.cancel_all()
    row.update({k: r[k] for k in ("detection_ms", "replay_s", "recovery_s", "replayed_barriers", "replayed_grants",
                                  "failure_free_s", "failure_free_wall_s", "run_s", "run_wall_s", "slowdown",
                                  "identical", "verified", "killed", "srun_exit", "failure_free_srun_exit")})
    row["outcome"] = outcome
    row["watchdog_procs"] = watchdog_count(out)
    row["failure_free_watchdog_procs"] = watchdog_count(r["failure_free_output"])
    if outcome != "recovered":
        keep = [l for l in out.splitlines() if " lost " in l or "error" in l.lower() or "replay" in l
                or "takes the place" in l or l.startswith(("answer:", "result:", "time:"))]
        row["error"] = "\n".join(keep[-30:])
    return row, r


def ratio(x, base):
    return x / base if x is not None and base else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.environ.get("BUILD_DIR", os.path.join(ROOT, "build")),
                    help="build folder with apps/ and cmd/cdsm-netsim")
    ap.add_argument("--delays", default="0,50,200", help="one-way delays of the switch, us (the first is the base)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--apps", default="sor,lu,fft,radix,water,barnes")
    ap.add_argument("--recovery-apps", default="sor,water", help="one rank killed (--victim)")
    ap.add_argument("--node-apps", default="sor", help="a node's ranks killed at once (--node-victims); "
                    "water here is expected to be not survivable")
    ap.add_argument("--victim", type=int, default=3)
    ap.add_argument("--node-victims", default="2,3", help="ranks of one node (sim-n2 in the block layout)")
    ap.add_argument("--at", type=float, default=0.5, help="kill point, fraction of the failure-free time")
    ap.add_argument("--args", action="append", default=[], help="APP=ARGS to replace an app's default arguments")
    ap.add_argument("--timeout", type=int, default=240, help="bound of every run, s")
    ap.add_argument("--app-env", action="append", default=[],
                    help="NAME=VALUE for the app table's runs (library settings, e.g. CDSM_RMA=1; repeatable)")
    ap.add_argument("-o", "--outdir", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()

    build = os.path.abspath(a.build)
    appdir = os.path.join(build, "apps")
    netsim = os.path.join(build, "cmd", "cdsm-netsim")
    delays = [int(d) for d in a.delays.split(",")]
    apps = [x for x in a.apps.split(",") if x]
    rapps = [x for x in a.recovery_apps.split(",") if x]
    napps = [x for x in a.node_apps.split(",") if x]
    node_victims = [int(v) for v in a.node_victims.split(",")]
    app_args = {k: v.split() for k, v in DEFAULT_ARGS.items()}
    app_env = dict(e.split("=", 1) for e in a.app_env)
    for s in a.args:
        k, _, v = s.partition("=")
        app_args[k] = v.split()
    missing = [x for x in set(apps + rapps + napps) if not os.access(os.path.join(appdir, x), os.X_OK)]
    if missing or not os.access(netsim, os.X_OK):
        sys.exit("latency_table: not built in %s: %s" % (build, ", ".join(missing + ([] if os.access(netsim, os.X_OK)
                                                                                         else ["cmd/cdsm-netsim"]))))
    if os.geteuid() != 0:
        sys.exit("latency_table: needs root (the simulated cluster)")
    if subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout.count("cdsm-sim-"):
        sys.exit("latency_table: a simulated cluster is already up (cdsm-sim-* namespaces exist)")
    os.makedirs(a.outdir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    np_, spares = 6, 2

    cl = Cluster(netsim)

    def on_signal(sig, _frame):
        raise SystemExit("latency_table: signal %d" % sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    app_rows, rec_rows, details, switch = [], [], [], {}
    t_start = time.time()
    try:
        cl.up()
        print("simulated cluster up (state %s); 6 ranks on sim-n1..3 (2 per node), spares 2 on sim-n4" % cl.dir)
        # The app table interleaves the delays (each repetition runs every delay in turn),
        # so that the machine's drift over the run falls on every delay alike: on 2 shared
        # cores it is larger than the effect of 50 us.
        print("== app table: %s, %d repetitions, delays %s us interleaved" % (",".join(apps), a.reps, a.delays),
              flush=True)
        for app in apps:
            by_delay = {d: [] for d in delays}
            for i in range(a.reps):
                for d in delays:
                    cl.sim("delay", d, timeout=30)
                    r = app_runs(cl, appdir, app, app_args.get(app, []), 1, a.timeout, np_, app_env)[0]
                    r["rep"] = i
                    by_delay[d].append(r)
            for d in delays:
                runs = by_delay[d]
                times = [r["time_s"] for r in runs if r["time_s"] is not None and r["srun_exit"] == 0]
                row = {"app": app, "args": " ".join(app_args.get(app, [])), "delay_us": d,
                       "time_s": statistics.median(times) if times else None,
                       "time_min_s": min(times) if times else None, "time_max_s": max(times) if times else None,
                       "wall_s": statistics.median(r["wall_s"] for r in runs),
                       "verified": all(r["verified"] for r in runs), "answers": sorted({str(r["answer"]) for r in runs}),
                       "runs": len(runs), "watchdog_runs": sum(1 for r in runs if r["watchdog_procs"]),
                       "nonzero_srun_exits": sum(1 for r in runs if r["srun_exit"] != 0),
                       "hung_runs": sum(1 for r in runs if r["hung"]),
                       "srun_exits": [r["srun_exit"] for r in runs]}
                app_rows.append(row)
                details.append({"kind": "app", "app": app, "delay_us": d, "runs": runs})
                print("  app %-12s time %s s (min %s, max %s) wall %.2f s  %s  watchdog %d/%d  srun exits %s" % (
                    "%s@%dus" % (app, d), fmt(row["time_s"], ".3f"), fmt(row["time_min_s"], ".3f"), fmt(row["time_max_s"], ".3f"),
                    row["wall_s"], "VERIFIED" if row["verified"] else "NOT VERIFIED", row["watchdog_runs"],
                    len(runs), row["srun_exits"]), flush=True)
                for r in runs:
                    if r["tail"]:
                        print("    rep %d: exit %s%s\n%s" % (r["rep"], r["srun_exit"], " (hung)" if r["hung"] else "",
                                                            "\n".join("      " + l for l in r["tail"].splitlines()[-12:])))
        for d in delays:
            cl.sim("delay", d, timeout=30)
            print("== recovery at delay %d us one way (%.0f s since start)" % (d, time.time() - t_start), flush=True)
            exps = [(app, [a.victim]) for app in rapps] + [(app, node_victims) for app in napps]
            for app, victims in exps:
                row, r = recovery(cl, appdir, app, app_args.get(app, []), victims, a.at, a.timeout, np_, spares)
                row["delay_us"] = d
                rec_rows.append(row)
                print("  recovery %-6s victims %-4s %-16s detect %s ms replay %s s recovery %s s slowdown %s ff %s s "
                      "watchdog ff/run %s/%s srun exits ff/run %s/%s" % (
                          app, row["victims"], row["outcome"], fmt(row.get("detection_ms"), ".1f"),
                          fmt(row.get("replay_s"), ".3f"), fmt(row.get("recovery_s"), ".3f"),
                          fmt(row.get("slowdown"), ".2f"), fmt(row.get("failure_free_s"), ".3f"),
                          row.get("failure_free_watchdog_procs", "-"), row.get("watchdog_procs", "-"),
                          row.get("failure_free_srun_exit", "-"), row.get("srun_exit", "-")), flush=True)
                if row["outcome"] not in ("recovered",) and row.get("error"):
                    print("\n".join("      " + l for l in row["error"].splitlines()[-15:]))
            switch[d] = cl.stats()
            s = switch[d]
            print("  switch: delayed %s, timer_wake_late_us %s, dropped (cut/queue full/write) %s/%s/%s" % (
                s.get("delayed"), s.get("timer_wake_late_us"), s.get("dropped_cut"), s.get("dropped_queue_full"),
                s.get("dropped_write")), flush=True)
    finally:
        cl.down()
    elapsed = time.time() - t_start

    # Ratios to the first delay's row.
    base = delays[0]
    for row in app_rows:
        b = next((x for x in app_rows if x["app"] == row["app"] and x["delay_us"] == base), None)
        row["ratio"] = ratio(row["time_s"], b and b["time_s"])
        row["same_answer_as_base"] = b is not None and row["answers"] == b["answers"]
    for row in rec_rows:
        b = next((x for x in rec_rows if x["app"] == row["app"] and x["victims"] == row["victims"]
                  and x["delay_us"] == base), None)
        row["recovery_ratio"] = ratio(row.get("recovery_s"), b and b.get("recovery_s"))
        row["failure_free_ratio"] = ratio(row.get("failure_free_s"), b and b.get("failure_free_s"))

    print()
    print("App table: 6 ranks on 3 simulated nodes (2 per node), median of %d runs; ratio = time / time at %d us"
          % (a.reps, base))
    print("%-7s %6s %9s %7s %8s %-9s %s" % ("app", "delay", "time_s", "ratio", "wall_s", "verified", "args"))
    for row in app_rows:
        print("%-7s %6d %9s %7s %8.2f %-9s %s" % (
            row["app"], row["delay_us"], fmt(row["time_s"], ".3f"), fmt(row["ratio"], ".2f"), row["wall_s"],
            ("yes" if row["verified"] and row["same_answer_as_base"] else "NO"), row["args"]))
    print()
    print("Recovery table: 6 ranks + 2 spares (sim-n4), kill -9 at %.0f%%; slowdown = run / failure-free; "
          "rec_ratio, ff_ratio = recovery_s, failure-free time / the same at %d us" % (100 * a.at, base))
    print("%-6s %-7s %6s %9s %8s %9s %8s %9s %8s %8s %-9s %s" % (
        "app", "victims", "delay", "detect_ms", "replay_s", "recovery", "slowdown", "ff_s", "rec_rat", "ff_rat",
        "identical", "outcome"))
    for row in rec_rows:
        print("%-6s %-7s %6d %9s %8s %9s %8s %9s %8s %8s %-9s %s" % (
            row["app"], row["victims"], row["delay_us"], fmt(row.get("detection_ms"), ".1f"),
            fmt(row.get("replay_s"), ".3f"), fmt(row.get("recovery_s"), ".3f"), fmt(row.get("slowdown"), ".2f"),
            fmt(row.get("failure_free_s"), ".3f"), fmt(row.get("recovery_ratio"), ".2f"),
            fmt(row.get("failure_free_ratio"), ".2f"),
            {True: "yes", False: "NO", None: "-"}[row.get("identical")], row["outcome"]))

    # The finalize watchdog and srun's exit status, over every srun this run started.
    runs = []  # (kind, watchdog processes, srun exit, hung)
    for dd in details:
        runs += [("app", r["watchdog_procs"], r["srun_exit"], r["hung"]) for r in dd["runs"]]
    for row in rec_rows:
        if "failure_free_srun_exit" in row:
            runs.append(("recovery-ff", row["failure_free_watchdog_procs"], row["failure_free_srun_exit"], False))
            runs.append(("recovery-run", row["watchdog_procs"], row["srun_exit"], row["outcome"] == "hung"))
    fired = [r for r in runs if r[1]]
    summary = {
        "sruns": len(runs), "watchdog_fired_runs": len(fired), "watchdog_fired_procs": sum(r[1] for r in runs),
        "failure_free_sruns": sum(1 for r in runs if r[0] != "recovery-run"),
        "failure_free_watchdog_fired": sum(1 for r in fired if r[0] != "recovery-run"),
        "recovery_sruns": sum(1 for r in runs if r[0] == "recovery-run"),
        "recovery_watchdog_fired": sum(1 for r in fired if r[0] == "recovery-run"),
        "failure_free_nonzero_srun_exits": sum(1 for r in runs if r[0] != "recovery-run" and r[2] != 0),
        "recovery_srun_exits": {str(k): sum(1 for r in runs if r[0] == "recovery-run" and r[2] == k)
                                for k in sorted({r[2] for r in runs if r[0] == "recovery-run"}, key=str)},
        "hung": sum(1 for r in runs if r[3]),
        "recoveries": len(rec_rows), "recovered": sum(1 for r in rec_rows if r["outcome"] == "recovered"),
        "not_survivable": sum(1 for r in rec_rows if r["outcome"] == "not survivable"),
        "elapsed_s": elapsed,
    }
    print()
    print("finalize watchdog (\"%s\") fired in %d of %d sruns (%d processes): %d of %d failure-free, %d of %d with a "
          "failure; srun exit status non-zero in %d of %d failure-free sruns; with a failure srun's statuses %s "
          "(137: that of the killed task); hung (timeout) in %d; recoveries: %d of %d recovered, %d not "
          "survivable; %.0f s in all" % (
              WATCHDOG, summary["watchdog_fired_runs"], summary["sruns"], summary["watchdog_fired_procs"],
              summary["failure_free_watchdog_fired"], summary["failure_free_sruns"], summary["recovery_watchdog_fired"],
              summary["recovery_sruns"], summary["failure_free_nonzero_srun_exits"], summary["failure_free_sruns"],
              summary["recovery_srun_exits"], summary["hung"], summary["recovered"],
              summary["recoveries"], summary["not_survivable"], elapsed))

    base_path = os.path.join(a.outdir, "latency-%s" % stamp)
    keys = ["table", "app", "victims", "delay_us", "time_s", "ratio", "wall_s", "verified", "detection_ms", "replay_s",
            "recovery_s", "slowdown", "failure_free_s", "recovery_ratio", "failure_free_ratio", "identical", "outcome",
            "watchdog_runs", "nonzero_srun_exits", "hung_runs", "srun_exit", "failure_free_srun_exit",
            "watchdog_procs", "failure_free_watchdog_procs", "args"]
    rows = [dict(r, table="apps", verified=r["verified"] and r["same_answer_as_base"]) for r in app_rows] + \
        [dict(r, table="recovery") for r in rec_rows]
    rows = [{k: r.get(k) for k in keys} for r in rows]
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except Exception:
        head = None
    doc = {"settings": {"delays_us": delays, "reps": a.reps, "apps": apps, "app_env": app_env,
                        "recovery_apps": rapps,
                        "node_apps": napps, "victim": a.victim, "node_victims": node_victims, "at": a.at,
                        "args": {k: app_args.get(k) for k in set(apps + rapps + napps)},
                        "timeout_s": a.timeout, "build": build, "git_head": head,
                        "ref_layout": REF_LAYOUT, "run_layout": RUN_LAYOUT},
           "apps": app_rows, "recovery": rec_rows, "summary": summary,
           "switch": {str(k): v for k, v in switch.items()}, "runs": details}
    write_results(base_path, rows, doc)
    good = all(r["verified"] and r["same_answer_as_base"] for r in app_rows) and \
        all(r["outcome"] in ("recovered", "not survivable") for r in rec_rows)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
