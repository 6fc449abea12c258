#!/usr/bin/env python3
"""Medians and spread of several splash3_table.py runs per variant.

    python3 bench/splash3_summary.py DIR VARIANTS [OUT.csv]

DIR holds one CSV of splash3_table.py per run, named VARIANT-rN.csv, or one folder per run
named VARIANT-rN holding that run's splash3-*.csv. VARIANTS is a comma-separated list of
the variants to compare, in print order. Prints per program and variant the medians of
the wall time and of cdsm over pthreads (min-max), the same for the region of interest,
and the answers seen; then the median over programs of each variant's ratios. Writes the
rows to OUT.csv when given. Interleave the variants' runs (a loop over repetitions, each
running every variant) so that the machine's drift falls on all of them alike."""
import csv
import glob
import os
import re
import statistics
import sys


def load(folder):
    """{program: {variant: [row, ...]}} from every run found in folder."""
    runs = [(os.path.basename(p)[:-4], p) for p in glob.glob(os.path.join(folder, "*-r*.csv"))]
    runs += [(os.path.basename(os.path.dirname(p)), p) for p in glob.glob(os.path.join(folder, "*-r*", "splash3-*.csv"))]
    rows = {}
    for run, path in sorted(runs):
        variant = re.sub(r"-r\d+$", "", run)
        for r in csv.DictReader(open(path)):
            rows.setdefault(r["program"], {}).setdefault(variant, []).append(r)
    return rows


def numbers(rows, key):
    return [float(r[key]) for r in rows if r.get(key) not in ("", None)]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rows, variants = load(sys.argv[1]), sys.argv[2].split(",")
    out = csv.writer(open(sys.argv[3], "w", newline="")) if len(sys.argv) > 3 else None
    if out:
        out.writerow(["program", "variant", "runs", "answers", "pthreads_s", "cdsm_s", "ratio", "ratio_min",
                      "ratio_max", "cdsm_roi_s", "roi_ratio", "roi_ratio_min", "roi_ratio_max"])
    print(f"{'program':10} {'variant':10} {'pthr_s':>7} {'cdsm_s':>7} {'ratio (min-max)':>19} "
          f"{'cdsm_roi':>8} {'roi_ratio (min-max)':>21}  answers")
    per_variant = {v: ([], []) for v in variants}
    for program, by_variant in rows.items():
        for v in variants:
            rs = by_variant.get(v, [])
            ratio, roi = numbers(rs, "ratio"), numbers(rs, "roi_ratio")
            answers = "/".join(sorted({r["answer"] for r in rs}))
            if not ratio:
                print(f"{program:10} {v:10} (no ratio: {answers or 'no run'})")
                continue
            med = statistics.median
            p_s, c_s, c_roi = med(numbers(rs, "pthreads_s")), med(numbers(rs, "cdsm_s")), numbers(rs, "cdsm_roi_s")
            roi_txt = f"{med(c_roi):8.4f} {med(roi):7.1f} ({min(roi):5.1f}-{max(roi):5.1f})" if roi and c_roi else f"{'':8} {'-':>21}"
            print(f"{program:10} {v:10} {p_s:7.3f} {c_s:7.3f} {med(ratio):7.1f} ({min(ratio):5.1f}-{max(ratio):5.1f}) "
                  f"{roi_txt}  {answers}")
            per_variant[v][0].append(med(ratio))
            if roi:
                per_variant[v][1].append(med(roi))
            if out:
                out.writerow([program, v, len(rs), answers, p_s, c_s, med(ratio), min(ratio), max(ratio),
                              med(c_roi) if c_roi else "", med(roi) if roi else "", min(roi) if roi else "",
                              max(roi) if roi else ""])
    for v, (ratio, roi) in per_variant.items():
        if ratio:
            print(f"median over programs, {v}: ratio {statistics.median(ratio):.2f} (max {max(ratio):.1f})"
                  + (f", region of interest {statistics.median(roi):.2f} (max {max(roi):.1f})" if roi else ""))


if __name__ == "__main__":
    main()
