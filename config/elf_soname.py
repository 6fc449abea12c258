#!/usr/bin/env python3
"""Print the soname of the shared library the linker would take for -lNAME, searching the
given -L folders, then the compiler's own (meson runs this to learn which HDF5 library
to load at run time: lib/ft/h5shim.h):

    elf_soname.py NAME CC [-LDIR ...]

Reads the ELF dynamic section itself, so that it needs no binutils. Exit 1, saying why,
when there is no such library or it has no soname."""
import os
import struct
import subprocess
import sys


def soname(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    is64, le = data[4] == 2, data[5] == 1
    e = "<" if le else ">"
    if is64:
        shoff, = struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x3A)
        sec = lambda i: struct.unpack_from(e + "IIQQQQIIQQ", data, shoff + i * shentsize)
        dyn_fmt = e + "qQ"
    else:
        shoff, = struct.unpack_from(e + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x2E)
        sec = lambda i: struct.unpack_from(e + "IIIIIIIIII", data, shoff + i * shentsize)
        dyn_fmt = e + "iI"
    for i in range(shnum):
        s = sec(i)
        if s[1] != 6:  # SHT_DYNAMIC
            continue
        strtab_off = sec(s[6])[4]  # sh_link: its string table
        for off in range(s[4], s[4] + s[5], struct.calcsize(dyn_fmt)):
            tag, val = struct.unpack_from(dyn_fmt, data, off)
            if tag == 14:  # DT_SONAME
                return data[strtab_off + val:data.index(b"\0", strtab_off + val)].decode()
            if tag == 0:
                break
    raise ValueError("no soname")


def search_dirs(cc, args):
    """The -L folders given, then those the compiler searches."""
    dirs = [a[2:] for a in args if a.startswith("-L")]
    try:
        out = subprocess.run(cc + ["-print-search-dirs"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("libraries:"):
                dirs += line.split("=", 1)[-1].split(":")
    except (OSError, subprocess.CalledProcessError):
        pass
    return [d for d in dirs if d]


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    name, cc, rest = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
    why = []
    for path in [os.path.join(d, f"lib{name}.so") for d in search_dirs(cc, rest)]:
        if not os.path.exists(path):
            continue
        try:
            print(soname(os.path.realpath(path)))
            return 0
        except (OSError, ValueError, struct.error) as err:
            why.append(f"{path}: {err}")
    print(f"elf_soname: no lib{name}.so with a soname found" + (": " + "; ".join(why) if why else ""),
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
