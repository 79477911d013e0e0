#!/usr/bin/env python3
"""procmem.py - memory of a process tree.

usage: procmem.py PID [PID...]

Finds each PID and all its descendants (by walking the PPid fields in /proc once,
so it stays fast with thousands of processes) and prints one line:

    procs=N rss_kib=R pss_kib=P

R is the sum of VmRSS from /proc/<pid>/status (shared pages are counted once per
process, so it overstates forked servers); P is the sum of Pss from
/proc/<pid>/smaps_rollup (shared pages divided among the processes that map them),
or of Pss in /proc/<pid>/smaps when smaps_rollup is missing. Processes that exit
while being read are skipped.
"""

import os
import sys


def read_status(pid):
    ppid = rss = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("PPid:"):
                    ppid = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError):
        return None
    return ppid, (rss or 0)


def read_pss(pid):
    for name in ("smaps_rollup", "smaps"):
        try:
            total = 0
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
            return total
        except (OSError, ValueError):
            continue
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    roots = {int(a) for a in argv[1:]}
    info = {}
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = read_status(int(d))
        if st is None:
            continue
        info[int(d)] = st
        children.setdefault(st[0], []).append(int(d))
    seen = set()
    todo = [p for p in roots if p in info]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(children.get(p, ()))
    rss = sum(info[p][1] for p in seen)
    pss = sum(read_pss(p) for p in seen)
    print(f"procs={len(seen)} rss_kib={rss} pss_kib={pss}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
