#!/usr/bin/env python3
"""Build the real Splash-3 suite both ways and compare (not part of CI: the suite's code
never enters this repository).

Takes a Splash-3 tree (SPLASH3_DIR or --splash3, the folder that holds codes/), copies its
codes/ twice into a scratch folder, builds every program with the suite's own pthreads
macro file and with include/cdsm/c.m4.cdsm (only the four Makefile.config variables CC,
CFLAGS, LDFLAGS and MACROS changed, as a user would), runs each with the suite's
recommended input at every P (pthreads with P threads, cdsm under mpiexec -n P; a program
that reads stdin opens its file in every process, `mpiexec -n P sh -c 'exec ./X < file'`), and
prints a table: builds / runs / answer equal / time ratio. Answers are compared on the
program's output with its timing lines removed: "equal", "DIFFERS", "n/a" (the program
prints no answer line, or its pthreads run failed: nothing to compare with) or "varies" (cdsm's answer is none of up to 4 pthreads runs', which
already differ among themselves).
Writes CSV."""
import argparse
import csv
import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# name, folder under codes/, binary, command (P: processes; run inside the folder)
PROGRAMS = [
    ("BARNES", "apps/barnes", "BARNES", "./BARNES < inputs/n16384-p{P}"),
    ("FMM", "apps/fmm", "FMM", "./FMM -o < inputs/input.{P}.16384"),  # -o: final positions
    ("OCEAN-C", "apps/ocean/contiguous_partitions", "OCEAN", "./OCEAN -p{P} -n258"),
    ("OCEAN-NC", "apps/ocean/non_contiguous_partitions", "OCEAN", "./OCEAN -p{P} -n258"),
    ("RADIOSITY", "apps/radiosity", "RADIOSITY", "./RADIOSITY -p {P} -ae 5000 -bf 0.1 -en 0.05 -room -batch"),
    # car.geo and head.den are not in every copy of the suite (large files): the teapot and
    # the scaled-down head are; their images are the answers.
    ("RAYTRACE", "apps/raytrace", "RAYTRACE", "./RAYTRACE -p{P} -m64 inputs/teapot.env"),
    ("VOLREND", "apps/volrend", "VOLREND", "./VOLREND {P} inputs/head-scaleddown4 8"),
    ("WATER-NSQ", "apps/water-nsquared", "WATER-NSQUARED", "./WATER-NSQUARED < inputs/n512-p{P}"),
    ("WATER-SP", "apps/water-spatial", "WATER-SPATIAL", "./WATER-SPATIAL < inputs/n512-p{P}"),
    ("CHOLESKY", "kernels/cholesky", "CHOLESKY", "./CHOLESKY -p{P} < inputs/tk15.O"),
    ("FFT", "kernels/fft", "FFT", "./FFT -p{P} -m16 -t"),  # -t: the inverse FFT checks the answer
    ("LU-C", "kernels/lu/contiguous_blocks", "LU", "./LU -p{P} -n512"),
    ("LU-NC", "kernels/lu/non_contiguous_blocks", "LU", "./LU -p{P} -n512"),
    ("RADIX", "kernels/radix", "RADIX", "./RADIX -p{P} -n1048576"),
]

# Files a program writes as its answer (globs, in its folder): compared by their hash.
OUTPUT_FILES = {"RAYTRACE": ["inputs/teapot.rl"], "VOLREND": ["inputs/head-scaleddown4_1*"]}


def answer_bytes(name, data):
    """The part of an answer file that is the answer. VOLREND's TIFFs (its bundled libtiff,
    built with 8-byte longs: an 8-byte directory offset at byte 8) hold uninitialised malloc
    bytes in their directory (valgrind: write() of uninitialised bytes in TIFFWriteDirectory),
    so they differ between two runs of one build whenever the heap's history differs: only
    the image data, from byte 16 to the directory, is compared."""
    if name == "VOLREND" and len(data) >= 16 and data[:4] == b"II*\0":
        end = int.from_bytes(data[8:16], "little")
        return data[16:end] if 16 <= end <= len(data) else data
    return data

# Lines that carry an answer (energies, checksums, errors, verdicts), and those that differ
# from run to run whatever the answer (times and rates).
ANSWER = re.compile(r"(?i)(energ|checksum|error|pass|fail|residual|\bsum\b|total|verif|kinetic|potential|\bpos\b|xtt)")
TIMING = re.compile(r"(?i)(time|elapsed|seconds|secs|msec|usec|cycles|rate|speedup|\bms\b|\bus\b)")


def configure_cdsm(codes, build_dir):
    """Point the copy's Makefile.config at cdsm: only CC, CFLAGS, LDFLAGS and MACROS change."""
    path = os.path.join(codes, "Makefile.config")
    lib = os.path.join(build_dir, "lib")
    text = open(path).read()
    text = re.sub(r"(?m)^CC :=.*$", "CC := mpicc", text)
    text = re.sub(r"(?m)^CFLAGS :=(.*)$", lambda m: f"CFLAGS :={m.group(1)} -I{ROOT}/include", text)
    text = re.sub(r"(?m)^LDFLAGS :=(.*)$", lambda m: f"LDFLAGS :={m.group(1)} -L{lib} -Wl,-rpath,{lib} -lcdsm", text)
    text = re.sub(r"(?m)^MACROS :=.*$", f"MACROS := {ROOT}/include/cdsm/c.m4.cdsm", text)
    open(path, "w").write(text)


def configure_pthreads_roi(codes):
    """Make the pthreads copy time its region of interest: a copy of the suite's macro file
    whose SPLASH3_ROI_BEGIN and SPLASH3_ROI_END (empty in the suite) print the monotonic
    clock to stderr, and MACROS pointed at it. cdsm's macro file records the same region
    (rank 0 prints it with CDSM_STATS=1). Nothing else changes."""
    path = os.path.join(codes, "Makefile.config")
    text = open(path).read()
    m = re.search(r"(?m)^MACROS :=\s*(\S+)\s*$", text)
    src = m.group(1).replace("$(BASEDIR)", codes)
    macros = open(src).read()
    stamp = ('{struct timespec splash3_roi_ts; clock_gettime(CLOCK_MONOTONIC, &splash3_roi_ts); '
             'fprintf(stderr, "splash3 roi %s %%ld.%%09ld\\n", (long)splash3_roi_ts.tv_sec, splash3_roi_ts.tv_nsec);}')
    for which in ("BEGIN", "END"):
        line = f"define(SPLASH3_ROI_{which}, `" + stamp % which.lower() + "')"
        macros = re.sub(rf"(?m)^define\(SPLASH3_ROI_{which},.*$", lambda m: line, macros)
    macros = macros.replace("#include <stdint.h>", "#include <stdint.h>\n#include <stdio.h>\n#include <time.h>", 1)
    out = src + ".roi"
    open(out, "w").write(macros)
    open(path, "w").write(text[:m.start(1)] + out + text[m.end(1):])


def roi_seconds(stderr, cdsm):
    """The region of interest as the run printed it, in seconds, or None."""
    if cdsm:
        m = re.search(r"region of interest (\d+) us", stderr)
        return int(m.group(1)) / 1e6 if m else None
    b = re.search(r"splash3 roi begin (\d+\.\d+)", stderr)
    e = re.search(r"splash3 roi end (\d+\.\d+)", stderr)
    return float(e.group(1)) - float(b.group(1)) if b and e else None


def build(codes, folder, binary):
    """make in one program's folder; returns (ok, the last line of its log when it failed)."""
    d = os.path.join(codes, folder)
    r = subprocess.run(["make", "-s", "-C", d], capture_output=True, text=True)
    ok = r.returncode == 0 and os.path.exists(os.path.join(d, binary))
    errors = [l for l in (r.stdout + r.stderr).splitlines() if "error" in l]
    return ok, [] if ok else errors[:1]


def output_files(d, name, remove):
    """The hashes of the program's answer files (removing them first when remove is set)."""
    lines = []
    for pattern in OUTPUT_FILES.get(name, []):
        for path in sorted(glob.glob(os.path.join(d, pattern))):
            if remove:
                os.remove(path)
            else:
                data = answer_bytes(name, open(path, "rb").read())
                lines.append(f"file {os.path.relpath(path, d)} {hashlib.sha256(data).hexdigest()}")
    return lines


def run(codes, folder, cmd, procs, cdsm, timeout, name=""):
    """One run; returns (status, seconds, normalised output with the answer files' hashes,
    seconds of the region of interest or None)."""
    d = os.path.join(codes, folder)
    output_files(d, name, True)
    line = cmd.format(P=procs)
    if cdsm:
        exe, _, rest = line.partition(" ")
        # A program reading stdin from a file gets it in every process by its own
        # redirection: hydra's forwarding of stdin ends the job past 64 KiB (README,
        # CHOLESKY's 330 KB); only rank 0 reads it.
        line = (f"mpiexec -n {procs} sh -c 'exec {line}'" if "<" in rest else f"mpiexec -n {procs} {exe} {rest}")
    t0 = time.monotonic()
    env = dict(os.environ, CDSM_STATS="1") if cdsm else None
    # Its own process group: a run past the timeout is killed whole (mpiexec and every
    # rank), not only the shell, which left the ranks of a hung run behind.
    p = subprocess.Popen(["sh", "-c", line], cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return "timeout", time.monotonic() - t0, "", None
    r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    dt = time.monotonic() - t0
    out = [l.strip() for l in r.stdout.splitlines() if ANSWER.search(l) and not TIMING.search(l)]
    out += output_files(d, name, False)
    return ("ok" if r.returncode == 0 else f"exit {r.returncode}"), dt, "\n".join(out), roi_seconds(r.stderr, cdsm)


def answer_verdict(res, pthreads_again):
    """equal: cdsm printed the answer of a pthreads run; varies: it did not, and pthreads
    runs print different answers from run to run (RADIOSITY's refinement order: up to 4
    pthreads runs are tried before calling a difference); DIFFERS (cdsm's run failed, or
    its answer is another); n/a: the pthreads run failed or printed no answer lines."""
    pt, cd = res["pthreads"], res["cdsm"]
    if pt[0] != "ok" or not pt[2]:  # (nothing to compare with: pthreads failed too, or printed no answer)
        return "n/a"
    if cd[0] != "ok":
        return "DIFFERS"
    seen = {pt[2]}
    for _ in range(3):
        if cd[2] in seen:
            return "equal"
        again = pthreads_again()
        if again[0] == "ok":
            seen.add(again[2])
    return "equal" if cd[2] in seen else "varies" if len(seen) > 1 else "DIFFERS"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splash3", default=os.environ.get("SPLASH3_DIR"), help="Splash-3 tree (holds codes/)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="cdsm build folder")
    ap.add_argument("--procs", default="2,4")
    ap.add_argument("--only", default="", help="comma-separated program names")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("-o", "--outdir", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    if not a.splash3 or not os.path.isdir(os.path.join(a.splash3, "codes")):
        sys.exit("splash3_table: give the Splash-3 tree (the folder holding codes/) with --splash3 or SPLASH3_DIR")
    scratch = os.path.join(a.build, "splash3")
    trees = {}
    for kind in ("pthreads", "cdsm"):
        trees[kind] = os.path.join(scratch, kind)
        shutil.rmtree(trees[kind], ignore_errors=True)
        shutil.copytree(os.path.join(a.splash3, "codes"), trees[kind], symlinks=True)
    configure_cdsm(trees["cdsm"], a.build)
    configure_pthreads_roi(trees["pthreads"])
    procs = [int(p) for p in a.procs.split(",")]
    only = set(a.only.split(",")) if a.only else None
    rows = []
    print(f"{'program':10} {'P':>2} {'builds':>8} {'pthreads':>10} {'cdsm':>10} {'answer':>8} {'pthr_s':>8} {'cdsm_s':>8} {'ratio':>7}"
          f" {'pthr_roi':>8} {'cdsm_roi':>8} {'roi_ratio':>9}")
    for name, folder, binary, cmd in PROGRAMS:
        if only and name not in only:
            continue
        built = {k: build(trees[k], folder, binary) for k in trees}
        for p in procs:
            res = {k: run(trees[k], folder, cmd, p, k == "cdsm", a.timeout, name) if built[k][0] else ("no build", 0, "", None)
                   for k in trees}
            verdict = answer_verdict(res, lambda: run(trees["pthreads"], folder, cmd, p, False, a.timeout, name)
                                     if built["pthreads"][0] else res["pthreads"])
            ratio = res["cdsm"][1] / res["pthreads"][1] if res["pthreads"][1] and res["cdsm"][0] == "ok" else None
            proi, croi = res["pthreads"][3], res["cdsm"][3]
            roi_ratio = croi / proi if proi and croi and res["cdsm"][0] == "ok" else None
            row = {"program": name, "procs": p,
                   "builds": "both" if built["pthreads"][0] and built["cdsm"][0] else
                             ("pthreads" if built["pthreads"][0] else "cdsm" if built["cdsm"][0] else "none"),
                   "pthreads_run": res["pthreads"][0], "cdsm_run": res["cdsm"][0],
                   "answer": verdict, "pthreads_s": round(res["pthreads"][1], 3), "cdsm_s": round(res["cdsm"][1], 3),
                   "ratio": round(ratio, 2) if ratio else "",
                   "pthreads_roi_s": round(proi, 4) if proi else "", "cdsm_roi_s": round(croi, 4) if croi else "",
                   "roi_ratio": round(roi_ratio, 2) if roi_ratio else "",
                   "build_error": " ".join(built["cdsm"][1])[:200]}
            rows.append(row)
            print(f"{name:10} {p:>2} {row['builds']:>8} {res['pthreads'][0]:>10} {res['cdsm'][0]:>10} {verdict:>8} "
                  f"{row['pthreads_s']:>8} {row['cdsm_s']:>8} {row['ratio']:>7} {row['pthreads_roi_s']:>8} "
                  f"{row['cdsm_roi_s']:>8} {row['roi_ratio']:>9}", flush=True)
    os.makedirs(a.outdir, exist_ok=True)
    path = os.path.join(a.outdir, time.strftime("splash3-%Y%m%d-%H%M%S.csv"))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["program"])
        w.writeheader()
        w.writerows(rows)
    print(f"csv: {path}")


if __name__ == "__main__":
    main()
