#!/usr/bin/env python3
"""What two spares cost a failure-free run: with CDSM_SPARES=2 every lock and barrier
message carries copies of the grant determinants (lib/ft/gcopy.c); with 1 it does not.
The same apps at 3 ranks through cmd/cdsmrun --local, the two settings interleaved per
round; medians, ranges, and the piggybacked bytes (summed over ranks). Prints a table and
writes JSON.

    python3 bench/spares_ab.py [ROUNDS] [OUT.json]     (from the source root, after a build in build/)
"""
import subprocess, re, statistics, sys, json, os
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
apps = {'water': ['-s', '20'], 'tsp': [], 'barnes': [], 'sor': ['-i', '300']}
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
res = {}
for r in range(rounds):
    for app, args in apps.items():
        for sp in ['1', '2']:
            out = subprocess.run([os.path.join(ROOT, 'cmd', 'cdsmrun'), '-n', '3', '-s', sp, '--local', '--stats', '2', os.path.join(ROOT, 'build', 'apps', app)] + args,
                                 capture_output=True, text=True, env=dict(os.environ, CDSM_STATS='1'))
            m = re.search(r'^time: ([0-9.]+) s', out.stdout, re.M)
            pb = re.search(r'^\s+piggyback_bytes\s+(\d+)', out.stdout + out.stderr, re.M)
            ok = 'result: VERIFIED' in out.stdout
            if not m or not ok:
                print('FAILED', app, sp, out.stdout[-500:], out.stderr[-500:]); continue
            res.setdefault((app, sp), []).append((float(m.group(1)), int(pb.group(1)) if pb else -1))
rows = []
for app in apps:
    a = [t for t, _ in res.get((app, '1'), [])]
    b = [t for t, _ in res.get((app, '2'), [])]
    if not a or not b: continue
    pa = statistics.median([p for _, p in res[(app, '1')]]); pbb = statistics.median([p for _, p in res[(app, '2')]])
    rows.append({'app': app, 'spares1_s': statistics.median(a), 'spares2_s': statistics.median(b),
                 'ratio': statistics.median(b) / statistics.median(a), 'min1': min(a), 'max1': max(a), 'min2': min(b), 'max2': max(b),
                 'piggyback1': pa, 'piggyback2': pbb, 'rounds': len(a)})
print('%-8s %10s %10s %7s %14s %14s %12s %12s' % ('app', 's=1 (s)', 's=2 (s)', 'ratio', 'range s=1', 'range s=2', 'pigg. s=1', 'pigg. s=2'))
for x in rows:
    print('%-8s %10.3f %10.3f %7.2f %6.3f-%6.3f %6.3f-%6.3f %12d %12d' % (x['app'], x['spares1_s'], x['spares2_s'], x['ratio'], x['min1'], x['max1'], x['min2'], x['max2'], x['piggyback1'], x['piggyback2']))
json.dump(rows, open(sys.argv[2] if len(sys.argv) > 2 else 'spares_ab.json', 'w'), indent=1)
