#!/usr/bin/env python3
"""The floors of lib/ point only downward: no file includes a header of a floor above it.

lib/base < lib/transport < lib/protocol < lib/ft < lib/runtime; splash/ sits on top and may
use the public headers and lib/base or lib/protocol's heap and configuration only. Every
quoted include must name a header that exists in the file's own floor, a floor below, or
include/. Exits 1, naming each offending include, when one does not."""
import os
import re
import sys

FLOORS = ["base", "transport", "protocol", "ft", "runtime"]


def headers(root):
    """Header name -> the floor that owns it ('public' for include/)."""
    owner = {}
    for floor in FLOORS:
        d = os.path.join(root, "lib", floor)
        for name in os.listdir(d):
            if name.endswith(".h"):
                owner[name] = floor
    for dirpath, _, names in os.walk(os.path.join(root, "include")):
        for name in names:
            rel = os.path.relpath(os.path.join(dirpath, name), os.path.join(root, "include"))
            owner[rel] = "public"
    return owner


def check(root):
    owner = headers(root)
    bad = []
    seen = 0
    for level, floor in enumerate(FLOORS):
        d = os.path.join(root, "lib", floor)
        for name in sorted(os.listdir(d)):
            if not name.endswith((".c", ".h")):
                continue
            with open(os.path.join(d, name)) as f:
                for n, line in enumerate(f, 1):
                    m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
                    if not m:
                        continue
                    seen += 1
                    inc = m.group(1)
                    where = owner.get(inc)
                    if where is None:
                        bad.append(f"lib/{floor}/{name}:{n}: includes \"{inc}\", which no floor owns")
                    elif where != "public" and FLOORS.index(where) > level:
                        bad.append(f"lib/{floor}/{name}:{n}: includes \"{inc}\" of lib/{where}, a floor above")
    return seen, bad


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    seen, bad = check(root)
    if seen < 50:  # the walk itself must have found the library's includes
        print(f"layers: only {seen} includes found under {root}/lib: wrong folder?")
        return 1
    for b in bad:
        print("layers: " + b)
    print(f"layers: {seen} includes checked, {len(bad)} pointing upward or nowhere")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
