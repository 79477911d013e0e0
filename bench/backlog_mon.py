#!/usr/bin/env python3
"""backlog_mon.py - watch a server drain its backlog: deliveries at smtp-sink, and the memory of its queue manager.

usage: backlog_mon.py --kind luamta|postfix --pidfile FILE --messages N --deadline S [--stall S]
                      [--metrics HOST:PORT] [--timeline FILE] SINKFILE...

Used by bench/relay --case Q (bench/relay.md, "Case Q: the backlog"). Started before the server: it waits for
FILE (luamta: the pid bench/relay writes when it starts `luamta run`; Postfix: queue/pid/master.pid) and then,
every 0.2 s, finds the processes that manage the queue among that pid's descendants and sums their VmRSS
(/proc/PID/status):
    luamta   the process titled "luamta: router"
    postfix  qmgr and every smtp process
Every 20 ms it reads the sinks' counters (smtp-sink -c writes "sess=S quit=Q mesg=M\\r" after every event; M is
the messages it accepted) and notes when the first new message arrived. For luamta it also reads the router's
/proc/PID/smaps_rollup (Rss, Pss, Anonymous) each second and, with --metrics, the gauge
luamta_queue_messages{state="active"} from the metrics endpoint (the messages the router holds).

It stops when the sinks have N messages more than at its start ("done"), after S seconds ("timeout"), or when
no message arrived for --stall seconds (default 120) once the server runs ("stall"), and prints one line of
key=value pairs (epoch times, KiB):
    what= first= done= got= peak_rss_kib= peak_at= peak_procs= peak_active= max_active= routers= samples=
    rollup_at_peak= (luamta: Rss/Pss/Anonymous of the router, read at most 1 s before the peak)
--timeline writes one line per 0.2 s sample: seconds since start, delivered, rss_kib, processes, active, and
cpu_s, the user + system CPU seconds of those processes so far (/proc/PID/stat; Postfix: of the smtp processes
alive at the sample, so it can go down).
Never writes to /proc, never signals anything; exits on its own within the deadline.
"""

import argparse
import os
import re
import socket
import sys
import time

REC = re.compile(rb"mesg=(\d+)\r")
ACTIVE = re.compile(rb'^luamta_queue_messages\{state="active"\} (\d+)', re.M)


def sink_total(fds):
    n = 0
    for fd in fds:
        size = os.fstat(fd).st_size
        if size:
            m = REC.findall(os.pread(fd, 80, max(0, size - 80)))
            if m:
                n += int(m[-1])
    return n


def read_pidfile(path):
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


def status(pid):
    name = ppid = None
    rss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Name:"):
                    name = line.split(None, 1)[1].strip()
                elif line.startswith("PPid:"):
                    ppid = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return name, ppid, rss


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("latin-1").strip()
    except OSError:
        return ""


def descendants(root):
    """{pid: (name, rss)} of root and every process below it (one pass over /proc)."""
    info, children = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = status(int(d))
        if st is None:
            continue
        info[int(d)] = (st[0], st[2])
        children.setdefault(st[1], []).append(int(d))
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        if p in out or p not in info:
            continue
        out[p] = info[p]
        todo.extend(children.get(p, ()))
    return out


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, ValueError, IndexError):
        return 0.0


def rollup(pid):
    vals = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Rss", "Pss", "Anonymous"):
                    vals[k] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return vals


def active_gauge(addr):
    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.3) as s:
            s.settimeout(0.3)
            s.sendall(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
            data = b""
            while len(data) < 1 << 20:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (OSError, ValueError):
        return None
    m = ACTIVE.search(data)
    return int(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=("luamta", "postfix"), required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--messages", type=int, required=True)
    ap.add_argument("--deadline", type=float, required=True)
    ap.add_argument("--stall", type=float, default=120)
    ap.add_argument("--metrics")
    ap.add_argument("--timeline")
    ap.add_argument("sinks", nargs="+")
    a = ap.parse_args()

    fds = [os.open(f, os.O_RDONLY) for f in a.sinks]
    base = sink_total(fds)
    target = base + a.messages
    start = time.time()
    tl = open(a.timeline, "w") if a.timeline else None
    master = None
    first = None
    last_n, last_change = base, start
    peak = (0, 0.0, 0, None, None)       # rss, when, processes, active then, rollup then
    active = None
    max_active = None
    last_roll = None                    # the router's smaps_rollup, read at most a second ago
    routers = set()
    samples = 0
    next_sample = next_slow = start
    what = "timeout"
    while True:
        now = time.time()
        n = sink_total(fds)
        if n != last_n:
            last_n, last_change = n, now
            if first is None:
                first = now
        if n >= target:
            what = "done"
            break
        if now - start > a.deadline:
            break
        if master is not None and now - last_change > a.stall:
            what = "stall"
            break
        if now >= next_sample:
            next_sample = now + 0.2
            if master is None:
                master = read_pidfile(a.pidfile)
                if master is not None:
                    last_change = now       # the stall clock runs from the server's start
            if master is not None:
                procs = descendants(master)
                if a.kind == "luamta":
                    mine = [p for p in procs if cmdline(p).startswith("luamta: router")]
                else:
                    mine = [p for p, (name, _) in procs.items() if name in ("qmgr", "smtp")]
                rss = sum(procs[p][1] for p in mine)
                samples += 1
                if a.kind == "luamta":
                    routers.update(mine)
                    if now >= next_slow:
                        next_slow = now + 1.0
                        if mine:
                            last_roll = rollup(mine[0]) or last_roll
                        if a.metrics:
                            active = active_gauge(a.metrics)
                            if active is not None:
                                max_active = active if max_active is None else max(max_active, active)
                if rss > peak[0]:
                    peak = (rss, now, len(mine), active, last_roll)
                if tl:
                    tl.write("%.1f %d %d %d %s %.2f\n" % (now - start, n - base, rss, len(mine),
                                                          "-" if active is None else active,
                                                          sum(cpu_seconds(p) for p in mine)))
        time.sleep(0.02)
    if tl:
        tl.close()
    roll = peak[4]
    print("what=%s first=%s done=%.6f got=%d peak_rss_kib=%d peak_at=%s peak_procs=%d peak_active=%s "
          "max_active=%s routers=%d samples=%d rollup_at_peak=%s" % (
              what, "%.6f" % first if first else "-", time.time(), last_n - base, peak[0],
              "%.6f" % peak[1] if peak[1] else "-", peak[2], "-" if peak[3] is None else peak[3],
              "-" if max_active is None else max_active, len(routers), samples,
              "-" if not roll else "Rss:%d,Pss:%d,Anonymous:%d" % (roll.get("Rss", 0), roll.get("Pss", 0),
                                                                  roll.get("Anonymous", 0))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
