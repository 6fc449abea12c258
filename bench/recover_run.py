#!/usr/bin/env python3
"""One online-recovery experiment under Slurm direct launch, and its report.

Runs an app failure-free on NP ranks and its spares (srun --mpi=pmi2), then again, kills the
process of rank VICTIM with kill -9 at FRACTION of the failure-free time (counted from the
moment every rank is initialised), and reports: detection time (kill -> the first survivor
names the rank), replay time and barriers replayed (the replacement's own measure), total
recovery (kill -> the replacement is live), the failure-free time of the replayed work
(replayed barriers / all barriers x failure-free time), the run's time against the
failure-free time (the survivors' slowdown), what a whole-job restart from the start would
have cost (the time up to the kill plus a failure-free run, launch included), and whether
the answer is bit-identical and verified. Needs the one-node Slurm (config/slurm-up.sh)
and SLURM_CONF in the environment. Importable: run_experiment() returns the figures.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

from apps_table import counters, fmt, parse_result


def clean_env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSM_")}
    env.update(extra)
    return env


def srun(np_, app, args, env, launcher=(), extra=()):
    """launcher: a prefix that runs srun elsewhere (the simulated cluster's login node);
    extra: srun options (nodes, task layout)."""
    return list(launcher) + ["srun", "-O", "--mpi=pmi2", "-n", str(np_)] + list(extra) + [app] + list(args)


def parse_common(out):
    """The app's result (verified: its own check passed; srun's status is that of the killed
    task) and the barriers summed over ranks."""
    r = parse_result(out)
    r["verified"] = r["result_verified"]
    c = counters(out, ["barriers", "lock_acquires"], r"cdsm\[all\] ")
    r["barriers_all"], r["acquires_all"] = c["barriers"], c["lock_acquires"]
    return r


def run_experiment(app, np_, spares, victim, fraction, args=(), timeout=300, env_extra=None, launcher=(),
                   ref_extra=(), run_extra=(), fail=None, keep_ref_output=False, ref_spares=True):
    """env_extra: CDSM_* settings for both runs (a program in resume mode checkpoints: its
    failure-free run pays for them too). victim: a rank, or a list of ranks that fail at
    once (a node). launcher, ref_extra, run_extra: see srun(). fail(pids): makes the
    failure (default: kill -9 of each victim's process). keep_ref_output: the result also
    holds the failure-free run's output and srun status (failure_free_output,
    failure_free_srun_exit). ref_spares: the failure-free run has the spares too (False: it
    runs the working ranks alone, as a layout in ref_extra may require)."""
    app = os.path.abspath(app)
    env_extra = dict(env_extra or {})
    victims = list(victim) if isinstance(victim, (list, tuple)) else [victim]
    t0 = time.time()
    # The same job with its spares and no failure: a run with spares tracks every page and
    # uses the socket transport, so a run without them would measure that choice too.
    ref_env = dict(env_extra, CDSM_STATS="2", **({"CDSM_SPARES": str(spares)} if ref_spares else {}))
    ref = subprocess.run(srun(np_ + (spares if ref_spares else 0), app, args, None, launcher, ref_extra),
                         capture_output=True, text=True, timeout=timeout, env=clean_env(ref_env))
    ref_wall = time.time() - t0
    rr = parse_common(ref.stdout + ref.stderr)
    if ref.returncode != 0 or not rr["answer"]:
        raise RuntimeError("failure-free run failed:\n" + (ref.stdout + ref.stderr)[-2000:])
    env = clean_env(dict(env_extra, CDSM_SPARES=str(spares), CDSM_LOG_LEVEL="info", CDSM_STATS="2"))
    start = time.time()
    p = subprocess.Popen(srun(np_ + spares, app, args, env, launcher, run_extra), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env)
    lines = []
    pids = {}
    up_at = None
    killed_at = None
    pat = re.compile(r"^cdsm\[(\d+)\] info: initialised: rank (\d+) of \d+, pid (\d+)")
    fd = p.stdout.fileno()
    os.set_blocking(fd, False)
    buf = ""

    def read_some():
        try:
            return os.read(fd, 65536).decode(errors="replace")
        except BlockingIOError:
            return ""

    while True:
        chunk = read_some()
        if chunk:
            buf += chunk
            while "\n" in buf:
                line, buf = buf.split("\n", 1)
                lines.append(line)
                m = pat.match(line)
                if m:
                    pids[int(m.group(2))] = int(m.group(3))
                    if len(pids) == np_ and up_at is None:
                        up_at = time.time()
        if up_at is not None and killed_at is None and time.time() >= up_at + fraction * rr["time"]:
            try:
                t_kill = time.time()  # before the call: the survivors may notice before it returns
                if fail:
                    fail([pids[v] for v in victims])
                else:
                    for v in victims:
                        os.kill(pids[v], signal.SIGKILL)
                killed_at = t_kill
            except ProcessLookupError:
                killed_at = -1.0
        if p.poll() is not None:
            os.set_blocking(fd, True)
            rest = p.stdout.read().decode(errors="replace")
            if rest:
                buf += rest
            lines.extend(buf.split("\n"))
            break
        if time.time() - start > timeout:
            p.kill()
            raise RuntimeError("the run with a failure did not end within %d s" % timeout)
        time.sleep(0.002)
    wall = time.time() - start
    out = "\n".join(lines)
    fr = parse_common(out)
    # Per victim: when a survivor first named it, when its replay ended, its checkpoint
    # restore; for several victims (a node) the last of them counts.
    per = []
    for v in victims:
        lost = [float(x) for x in re.findall(r"rank %d lost \([^)]*\) at ([0-9.]+)" % v, out)]
        m = re.search(r"rank %d: replay of (\d+) barriers and (\d+) lock grants done in ([0-9.]+) s at ([0-9.]+) "
                      r"\(synchronisation (\d+)\)" % v, out)
        # A program in resume mode: the replacement restored the rank's last checkpoint first.
        ck = re.search(r"rank %d: restored checkpoint \d+ \(barrier \d+, synchronisation (\d+),[^)]*\) in ([0-9.]+) s"
                       % v, out)
        per.append((min(lost) if lost else None, m, ck))
    lost_at = [x[0] for x in per]
    m = per[-1][1] if all(x[1] for x in per) else None
    if m:
        m = max((x[1] for x in per), key=lambda mm: float(mm.group(4)))
    ck = next((x[2] for x in per if x[1] is m), None) if m else None
    lost = [max(lost_at)] if all(t is not None for t in lost_at) else []
    res = {
        "app": os.path.basename(app), "procs": np_, "spares": spares,
        "victim": victim if len(victims) == 1 else ",".join(map(str, victims)), "fraction": fraction,
        "failure_free_s": rr["time"], "failure_free_wall_s": ref_wall,
        "run_s": fr["time"], "run_wall_s": wall, "srun_exit": p.returncode,
        "killed": killed_at is not None and killed_at > 0,
        "detection_ms": (min(lost) - killed_at) * 1000 if lost and killed_at and killed_at > 0 else None,
        "replayed_barriers": int(m.group(1)) if m else None,
        "replayed_grants": int(m.group(2)) if m else None,
        # The replacement's own measure runs from its takeover: a restore is counted apart.
        "replay_s": float(m.group(3)) - (float(ck.group(2)) if ck else 0.0) if m else None,
        "recovery_s": float(m.group(4)) - killed_at if m and killed_at and killed_at > 0 else None,
        "restore_s": float(ck.group(2)) if ck else 0.0,  # 0: replay from the program's start
        "answer": fr["answer"], "failure_free_answer": rr["answer"],
        "identical": fr["answer"] == rr["answer"], "verified": fr["verified"],
    }
    # The failure-free time of the replayed work: the run's time in proportion to the
    # synchronisation operations (acquire, release, barrier) replayed, of a rank's share.
    sync_per_rank = ((rr["barriers_all"] or 0) + 2 * (rr["acquires_all"] or 0)) / np_
    first = int(ck.group(1)) if ck else 0
    res["replayed_work_s"] = (rr["time"] * min(1.0, (int(m.group(5)) - first) / sync_per_rank)
                              if m and sync_per_rank and rr["time"] else None)
    res["replay_ratio"] = (res["replay_s"] / res["replayed_work_s"]
                           if res["replay_s"] is not None and res["replayed_work_s"] else None)
    res["slowdown"] = fr["time"] / rr["time"] if fr["time"] and rr["time"] else None
    res["whole_job_restart_s"] = (killed_at - start) + ref_wall if res["killed"] else None
    res["output"] = out
    if keep_ref_output:
        res["failure_free_output"] = ref.stdout + ref.stderr
        res["failure_free_srun_exit"] = ref.returncode
    return res


def report(r, f=sys.stdout):
    p = lambda *a: print(*a, file=f)
    p("== cdsm online recovery: %s on %d ranks + %d spare(s), rank %d killed (kill -9) at %.0f%% of the run =="
      % (r["app"], r["procs"], r["spares"], r["victim"], 100 * r["fraction"]))
    p("  failure-free run        %s  answer %s" % (fmt(r["failure_free_s"], ".3f", " s"), r["failure_free_answer"]))
    p("  detection               %s  (kill -> a survivor names rank %d)" % (fmt(r["detection_ms"], ".1f", " ms"), r["victim"]))
    p("  checkpoint restore      %s  (%s)" % (fmt(r["restore_s"], ".3f", " s"), "the rank's last checkpoint"
                                              if r["restore_s"] else "none: replay from the program's start"))
    p("  replay                  %s  (%s barriers, %s lock grants; their failure-free time %s, ratio %s)" % (
        fmt(r["replay_s"], ".3f", " s"), fmt(r["replayed_barriers"], "d"), fmt(r["replayed_grants"], "d"),
        fmt(r["replayed_work_s"], ".3f", " s"), fmt(r["replay_ratio"], ".2f")))
    p("  total recovery          %s  (kill -> the replacement is live)" % fmt(r["recovery_s"], ".3f", " s"))
    p("  run with the failure    %s  (%s x failure-free; survivors never rolled back)" % (
        fmt(r["run_s"], ".3f", " s"), fmt(r["slowdown"], ".2f")))
    p("  whole-job restart       %s  (work lost up to the kill + a new failure-free job, launch included)"
      % fmt(r["whole_job_restart_s"], ".3f", " s"))
    p("  answer                  %s  %s, %s" % (r["answer"], "identical to the failure-free run" if r["identical"]
                                                 else "DIFFERENT from the failure-free run",
                                                 "VERIFIED" if r["verified"] else "NOT verified"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s APP [options] [-- APP ARGS...]")
    ap.add_argument("app")
    ap.add_argument("--np", type=int, default=4)
    ap.add_argument("--spares", type=int, default=1)
    ap.add_argument("--victim", type=int, default=1)
    ap.add_argument("--at", type=float, default=0.5, help="kill at this fraction of the failure-free time")
    ap.add_argument("--env", action="append", default=[], metavar="CDSM_NAME=VALUE",
                    help="a setting for both runs (repeatable), e.g. CDSM_CKPT_DIR=/tmp/ck")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--show-output", action="store_true", help="print the run's output (DSM statistics)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a = ap.parse_args(argv[:cut])
    args = argv[cut + 1:]  # the app's arguments, after --
    env = {}
    for kv in a.env:
        k, eq, v = kv.partition("=")
        if not eq or not k.startswith("CDSM_"):
            ap.error("--env %s: expected CDSM_NAME=VALUE" % kv)
        env[k] = v
    r = run_experiment(a.app, a.np, a.spares, a.victim, a.at, args, env_extra=env)
    if a.show_output:
        print("\n".join(l for l in r["output"].split("\n") if not l.startswith("cdsm[") or "[all]" in l
                        or " lost " in l or "replay" in l or "takes the place" in l))
    report(r)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({k: v for k, v in r.items() if k != "output"}, f, indent=1)
    return 0 if r["identical"] and r["verified"] and r["killed"] else 1


if __name__ == "__main__":
    sys.exit(main())
