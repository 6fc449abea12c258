#!/usr/bin/env python3
"""A/B of cdsm variants on the real Splash-3 programs (not part of CI: the suite's code
never enters this repository).

Builds the suite once against the shared libcdsm of --build and once with pthreads (as
bench/splash3_table.py does, in --work, kept between runs), then runs each program at P
ranks under every variant in turn, round after round, so that a noisy moment hits the
variants alike. A variant is NAME=SPEC: SPEC is a folder holding another libcdsm.so (the
same binaries run against it through LD_LIBRARY_PATH), or CDSM_* assignments joined by
'+' (an empty SPEC: the library of --build as it is), or @pthreads (the pthreads build, run
in turn with the others). The first variant is the baseline.

Prints per program and variant the median whole-run and region-of-interest seconds, the
spread of the region ((max - min) / median), its ratio to the baseline's median, and
whether every answer was one of pthreads' (up to 4 pthreads runs are tried: RADIOSITY's
answer varies under pthreads too). Writes JSON (every run) and CSV (the medians).

    python3 bench/splash3_ab.py --splash3 TREE --work DIR old=/tmp/libold new= --rounds 5 \\
        --only BARNES,FMM
    python3 bench/splash3_ab.py --splash3 TREE --work DIR base= late=CDSM_LATE_BELL_US=200
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import splash3_table as s3  # noqa: E402


def parse_variant(text):
    """NAME=SPEC -> (name, library folder or None, {var: value})."""
    name, sep, spec = text.partition("=")
    if not sep or not name:
        sys.exit(f"splash3_ab: a variant is NAME=SPEC, not {text!r}")
    if spec == "@pthreads":
        return name, "@pthreads", {}
    if spec and os.path.isdir(spec):
        if not os.path.exists(os.path.join(spec, "libcdsm.so.0")):
            sys.exit(f"splash3_ab: variant {name}: {spec} holds no libcdsm.so.0")
        return name, os.path.abspath(spec), {}
    env = {}
    for part in filter(None, spec.split("+")):
        var, eq, value = part.partition("=")
        if not eq or not var.startswith("CDSM_"):
            sys.exit(f"splash3_ab: variant {name}: {part!r} is neither a library folder nor CDSM_VAR=VALUE")
        env[var] = value
    return name, None, env


def prepare(splash3, work, build_dir):
    """The two trees, copied and configured once (a tree already there is reused)."""
    trees = {}
    for kind in ("pthreads", "cdsm"):
        trees[kind] = os.path.join(work, kind)
        if not os.path.isdir(trees[kind]):
            shutil.copytree(os.path.join(splash3, "codes"), trees[kind], symlinks=True)
            (s3.configure_cdsm(trees[kind], build_dir) if kind == "cdsm" else s3.configure_pthreads_roi(trees[kind]))
    return trees


def run_variant(trees, prog, procs, lib, env, timeout):
    """One cdsm run under a variant's library or settings (or the pthreads build: @pthreads)."""
    if lib == "@pthreads":
        return s3.run(trees["pthreads"], prog[1], prog[3], procs, False, timeout, prog[0])
    saved = {k: os.environ.get(k) for k in list(env) + ["LD_LIBRARY_PATH"]}
    os.environ.update(env)
    if lib:
        os.environ["LD_LIBRARY_PATH"] = lib
    try:
        return s3.run(trees["cdsm"], prog[1], prog[3], procs, True, timeout, prog[0])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def one_program(trees, prog, variants, a):
    """Every round of one program; returns {variant: [(whole, roi, answer ok)]}."""
    name, folder, binary, _ = prog
    for kind in trees:
        ok, err = s3.build(trees[kind], folder, binary)
        if not ok:
            print(f"{name}: the {kind} build failed: {' '.join(err)}")
            return None
    pt = s3.run(trees["pthreads"], folder, prog[3], a.procs, False, a.timeout, name)
    seen, runs = {pt[2]}, {v[0]: [] for v in variants}
    for r in range(a.rounds):
        for vname, lib, env in variants:
            st, dt, out, roi = run_variant(trees, prog, a.procs, lib, env, a.timeout)
            ok = st == "ok" and (not pt[2] or out in seen)
            for _ in range(3 if st == "ok" and not ok else 0):  # pthreads' other answers
                seen.add(s3.run(trees["pthreads"], folder, prog[3], a.procs, False, a.timeout, name)[2])
                ok = out in seen
            runs[vname].append((dt, roi, ok))
            print(f"  {name} {vname} round {r + 1}: {dt:.3f} s, roi {roi if roi is not None else '-'}"
                  f"{'' if ok else ', ANSWER ' + st}", flush=True)
    return runs


def summarise(name, runs, base):
    """Rows of medians, spreads and ratios to the baseline's region of interest."""
    def med(xs):
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None
    rows, b = [], med(x[1] for x in runs[base])
    for vname, rr in runs.items():
        rois = [x[1] for x in rr if x[1] is not None]
        m = med(rois)
        rows.append({"program": name, "variant": vname, "runs": len(rr),
                     "whole_s": round(med(x[0] for x in rr), 4),
                     "roi_s": round(m, 5) if m else "",
                     "roi_spread": round((max(rois) - min(rois)) / m, 2) if m else "",
                     "roi_ratio": round(m / b, 3) if m and b else "",
                     "answers": "all ok" if all(x[2] for x in rr) else "NOT OK"})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", help="NAME=SPEC (library folder, or CDSM_X=v+CDSM_Y=w, or empty)")
    ap.add_argument("--splash3", default=os.environ.get("SPLASH3_DIR"), help="Splash-3 tree (holds codes/)")
    ap.add_argument("--build", default=os.path.join(s3.ROOT, "build"), help="cdsm build folder (absolute)")
    ap.add_argument("--work", required=True, help="folder for the two built trees (reused between runs)")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated program names")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("-o", "--outdir", default=os.path.join(s3.ROOT, "bench", "results"))
    a = ap.parse_args()
    if not a.splash3 or not os.path.isdir(os.path.join(a.splash3, "codes")):
        sys.exit("splash3_ab: give the Splash-3 tree (the folder holding codes/) with --splash3 or SPLASH3_DIR")
    variants = [parse_variant(v) for v in a.variants]
    if len({v[0] for v in variants}) != len(variants):
        sys.exit("splash3_ab: two variants have the same name")
    trees = prepare(a.splash3, os.path.abspath(a.work), os.path.abspath(a.build))
    only = set(a.only.split(",")) if a.only else None
    rows, everything = [], {}
    for prog in s3.PROGRAMS:
        if only and prog[0] not in only:
            continue
        runs = one_program(trees, prog, variants, a)
        if runs is None:
            continue
        everything[prog[0]] = runs
        rows += summarise(prog[0], runs, variants[0][0])
    print(f"\n{'program':10} {'variant':12} {'whole_s':>8} {'roi_s':>9} {'spread':>6} {'roi/base':>8}  answers")
    for r in rows:
        print(f"{r['program']:10} {r['variant']:12} {r['whole_s']:>8} {r['roi_s']:>9} {r['roi_spread']:>6} "
              f"{r['roi_ratio']:>8}  {r['answers']}")
    os.makedirs(a.outdir, exist_ok=True)
    stem = os.path.join(a.outdir, time.strftime("splash3-ab-%Y%m%d-%H%M%S"))
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["program"])
        w.writeheader()
        w.writerows(rows)
    with open(stem + ".json", "w") as f:
        json.dump({"procs": a.procs, "rounds": a.rounds, "variants": a.variants,
                   "runs": {p: {v: [list(x) for x in rr] for v, rr in runs.items()} for p, runs in everything.items()}},
                  f, indent=1)
    print(f"csv: {stem}.csv\njson: {stem}.json")


if __name__ == "__main__":
    main()
