#!/usr/bin/env python3
"""A long run with kills spread over it (not in CI): one resume-mode sor job through the
launcher (cmd/cdsmrun) on RANKS ranks with one spare per kill, checkpoints every few
barriers, and a rank killed every KILL_EVERY seconds, the victims rotating over every rank
(rank 0 among them). It shows whether memory, the protocol's logs, the archive and the
checkpoint disk stay bounded, how long each replay window lasts, and that the answer is
still bit-identical to the sequential run (sor checks it itself).

Samples: each rank prints its memory every few iterations (sor -M: resident set, log,
determinant and archive bytes, as committed output), and this script samples the checkpoint
folder's size and file count every SAMPLE seconds. Writes CSV and JSON, and a PNG plot
(gnuplot) to bench/results/.

    python3 bench/long_run.py --minutes 30 --kill-every 150
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def run_cdsmrun(args, log_path):
    """cdsmrun with args, output to log_path; returns (exit status, output text)."""
    with open(log_path, "w") as log:
        rc = subprocess.call([os.path.join(ROOT, "cmd", "cdsmrun")] + args, stdout=log, stderr=subprocess.STDOUT)
    return rc, open(log_path, errors="replace").read()


def calibrate(a, sor, scratch):
    """Seconds per iteration of the same job with no kill (a short run)."""
    ck = os.path.join(scratch, "calib")
    its = 400
    t0 = time.time()
    rc, out = run_cdsmrun(["-n", str(a.ranks), "-s", "1", "--ckpt-dir", ck, "--ckpt-every", str(a.ckpt_every),
                           "--progress", "0", sor, "-r", "-n", str(a.n), "-i", str(its)], os.path.join(scratch, "calib.log"))
    if rc != 0:
        sys.exit("long_run: the calibration run failed (status %d):\n%s" % (rc, out[-2000:]))
    m = re.search(r"parallel time\s+([0-9.]+) s", out)
    t = float(m.group(1)) if m else time.time() - t0
    return t / its


def sample_disk(ck, stop, samples, period, t0):
    """The checkpoint folder's bytes and files every period seconds, until stop is set."""
    while not stop.wait(period):
        total = files = 0
        for dirpath, _, names in os.walk(ck):
            for f in names:
                try:
                    total += os.path.getsize(os.path.join(dirpath, f))
                    files += 1
                except OSError:
                    pass
        samples.append({"t": round(time.time() - t0, 1), "ckpt_bytes": total, "ckpt_files": files})


def memory_lines(out):
    """sor -M lines: rank, iteration, rss_kb, log/det/archive bytes."""
    rows = []
    pat = re.compile(r"^sor: rank (\d+) iteration (\d+) memory rss_kb=(-?\d+) log_bytes=(\d+) det_bytes=(\d+) "
                     r"archive_bytes=(\d+)(?: malloc_kb=(\d+))?$", re.M)
    for m in pat.finditer(out):
        r, it, rss, lg, det, ar = (int(x) for x in m.groups()[:6])
        rows.append({"rank": r, "iteration": it, "rss_kb": rss, "log_bytes": lg, "det_bytes": det,
                     "archive_bytes": ar, "malloc_kb": int(m.group(7) or 0)})
    return rows


def halves(rows, key, last_it):
    """Max of a metric over the first and the second half of the run (bounded: the second
    is not above the first by much)."""
    first = [r[key] for r in rows if r["iteration"] <= last_it / 2]
    second = [r[key] for r in rows if r["iteration"] > last_it / 2]
    return (max(first) if first else 0, max(second) if second else 0)


def plot(png, mem_csv, disk_csv, ranks):
    if not shutil.which("gnuplot"):
        return "gnuplot not found"
    script = f"""set terminal pngcairo size 1100,700
set output '{png}'
set datafile separator ','
set key outside
set multiplot layout 2,1 title 'cdsm long run: sor -r with kills (memory per rank, checkpoint disk)'
set xlabel 'iteration'
set ylabel 'MiB'
plot for [r=0:{ranks - 1}] '{mem_csv}' using ($1==r ? $2 : 1/0):($3/1024.0) with points title sprintf('rss rank %d', r), \\
     for [r=0:{ranks - 1}] '{mem_csv}' using ($1==r ? $2 : 1/0):(($4+$5+$6)/1048576.0) with points pt 1 title sprintf('logs rank %d', r)
set xlabel 'seconds'
set ylabel 'checkpoint MiB'
set y2tics
set y2label 'files'
plot '{disk_csv}' using 1:($2/1048576.0) with lines title 'checkpoint folder', '' using 1:3 axes x1y2 with lines title 'files (right)'
unset multiplot
"""
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    return None if r.returncode == 0 else r.stderr.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--kill-every", type=float, default=150.0, help="seconds between kills")
    ap.add_argument("--ranks", type=int, default=3)
    ap.add_argument("-n", type=int, default=1026, help="sor grid size")
    ap.add_argument("--ckpt-every", type=int, default=20, help="barriers between checkpoints")
    ap.add_argument("--sample", type=float, default=15.0, help="seconds between disk samples")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("-o", "--outdir", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    sor = os.path.join(a.build, "apps", "sor")
    scratch = tempfile.mkdtemp(prefix="cdsm-long-")
    spi = calibrate(a, sor, scratch)
    seconds = a.minutes * 60
    iters = max(100, int(seconds / spi))
    kills = []
    t = a.kill_every
    while t < seconds * 0.9:
        kills.append((len(kills) + 1) % a.ranks)  # 1, 2, ..., 0, 1...: rank 0 among them
        t += a.kill_every
    kill_args = []
    for i, victim in enumerate(kills):
        kill_args += ["--kill", "%d@%.0f" % (victim, a.kill_every * (i + 1))]
    mem_every = max(1, int(20.0 / spi))
    ck = os.path.join(scratch, "ck")
    print("long_run: %.4f s per iteration: %d iterations for %.0f min, %d kills (%s), a memory line every %d "
          "iterations" % (spi, iters, a.minutes, len(kills), ",".join(map(str, kills)), mem_every), flush=True)
    disk, stop, t0 = [], threading.Event(), time.time()
    th = threading.Thread(target=sample_disk, args=(ck, stop, disk, a.sample, t0), daemon=True)
    th.start()
    rc, out = run_cdsmrun(["-n", str(a.ranks), "-s", str(len(kills)), "--ckpt-dir", ck, "--ckpt-every",
                           str(a.ckpt_every), "--progress", "60"] + kill_args +
                          [sor, "-r", "-n", str(a.n), "-i", str(iters), "-M", str(mem_every)],
                          os.path.join(scratch, "run.log"))
    stop.set()
    th.join()
    wall = time.time() - t0
    mem = memory_lines(out)
    windows = [float(x) for x in re.findall(r"^  recovery     rank \d+: .*live ([0-9.]+) s after the loss", out, re.M)]
    restored = len(re.findall(r"^  recovery     rank \d+: checkpoint \d+ \(barrier", out, re.M))
    verified = "check           bit-identical to the sequential run" in out
    stamp = time.strftime("%Y%m%d-%H%M%S")
    os.makedirs(a.outdir, exist_ok=True)
    mem_csv = os.path.join(a.outdir, "long-run-memory-%s.csv" % stamp)
    disk_csv = os.path.join(a.outdir, "long-run-disk-%s.csv" % stamp)
    with open(mem_csv, "w") as f:
        f.write("rank,iteration,rss_kb,log_bytes,det_bytes,archive_bytes,malloc_kb\n")
        for r in sorted(mem, key=lambda r: (r["iteration"], r["rank"])):
            f.write("%d,%d,%d,%d,%d,%d,%d\n" % (r["rank"], r["iteration"], r["rss_kb"], r["log_bytes"], r["det_bytes"],
                                               r["archive_bytes"], r["malloc_kb"]))
    with open(disk_csv, "w") as f:
        f.write("seconds,ckpt_bytes,ckpt_files\n")
        for s in disk:
            f.write("%s,%d,%d\n" % (s["t"], s["ckpt_bytes"], s["ckpt_files"]))
    summary = {"minutes_asked": a.minutes, "wall_s": round(wall, 1), "iterations": iters, "ranks": a.ranks,
               "kills": len(kills), "victims": kills, "recoveries": len(windows), "restored_from_checkpoint": restored,
               "replay_windows_s": windows, "exit_status": rc, "bit_identical": verified}
    print("%-12s %12s %12s" % ("metric", "max 1st half", "max 2nd half"))
    for key in ("rss_kb", "malloc_kb", "log_bytes", "det_bytes", "archive_bytes"):
        h1, h2 = halves(mem, key, iters)
        summary[key + "_halves"] = [h1, h2]
        print("%-12s %12d %12d" % (key, h1, h2))
    half = wall / 2
    d1 = max([s["ckpt_bytes"] for s in disk if s["t"] <= half] or [0])
    d2 = max([s["ckpt_bytes"] for s in disk if s["t"] > half] or [0])
    summary["ckpt_bytes_halves"] = [d1, d2]
    print("%-12s %12d %12d" % ("ckpt_bytes", d1, d2))
    ws = sorted(windows)
    print("kills %d, recoveries %d (%d from a checkpoint), replay window median %.3f s, max %.3f s; exit status %d; "
          "answer %s" % (len(kills), len(windows), restored, ws[len(ws) // 2] if ws else 0.0, ws[-1] if ws else 0.0, rc,
                         "bit-identical to the sequential run" if verified else "NOT VERIFIED"))
    js = os.path.join(a.outdir, "long-run-%s.json" % stamp)
    json.dump(summary, open(js, "w"), indent=1)
    png = os.path.join(a.outdir, "long-run-%s.png" % stamp)
    why = plot(png, mem_csv, disk_csv, a.ranks)
    print("csv: %s %s\njson: %s\nplot: %s" % (mem_csv, disk_csv, js, png if not why else "none (%s)" % why))
    shutil.copy(os.path.join(scratch, "run.log"), os.path.join(a.outdir, "long-run-%s.log" % stamp))
    shutil.rmtree(scratch, ignore_errors=True)
    return 0 if rc == 0 and verified and len(windows) == len(kills) else 1


if __name__ == "__main__":
    sys.exit(main())
