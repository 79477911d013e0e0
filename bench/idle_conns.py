#!/usr/bin/env python3
"""idle_conns.py - open N idle SMTP connections and hold them.

usage: idle_conns.py [-n N] [--deadline S] [--hold S] HOST:PORT

Opens N TCP connections to HOST:PORT (at most --inflight connects/banners pending at
a time, so that a server's listen backlog is not flooded), reads the greeting of each,
then prints one line to stdout:

    ready requested=N connected=C banners=B failed=F

where B counts connections that got a complete 220 greeting. Connections that failed
to connect, got something other than a 220, or got no greeting before the deadline are
closed. The others stay open and silent (no HELO) until stdin reaches end of file,
SIGTERM/SIGINT/SIGHUP arrives, or --hold seconds have passed; then the helper prints
"closed open=K" (K = connections the server had not dropped meanwhile) and exits.

Only the standard library; stdout is line-buffered for the caller (bench/run).
"""

import argparse
import errno
import os
import resource
import selectors
import signal
import socket
import sys
import time


def parse_target(s):
    host, sep, port = s.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    return host, int(port)


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft


class Conn:
    __slots__ = ("sock", "state", "buf", "started")

    def __init__(self, sock, started):
        self.sock = sock
        self.state = "connecting"   # -> "banner" -> "idle" | closed
        self.buf = b""
        self.started = started


def greeting_done(buf):
    """Return (complete, ok) for the reply in buf (multi-line 220- replies allowed)."""
    while True:
        i = buf.find(b"\r\n")
        if i < 0:
            i = buf.find(b"\n")
            if i < 0:
                return False, False
        line = buf[:i]
        buf = buf[i + 1:].lstrip(b"\n")
        if len(line) >= 4 and line[3:4] == b"-":
            if not line.startswith(b"220"):
                return True, False
            continue
        return True, line.startswith(b"220")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", type=parse_target, metavar="HOST:PORT")
    ap.add_argument("-n", type=int, default=2000, help="connections to open (2000)")
    ap.add_argument("--connect-timeout", type=float, default=5.0,
                    help="per-connection limit for connect + greeting, seconds (5)")
    ap.add_argument("--deadline", type=float, default=60.0,
                    help="limit for opening all connections, seconds (60)")
    ap.add_argument("--hold", type=float, default=300.0,
                    help="close everything after this many seconds anyway (300)")
    ap.add_argument("--inflight", type=int, default=100,
                    help="connections connecting or awaiting a greeting at once (100)")
    args = ap.parse_args()

    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)

    limit = raise_nofile(args.n)
    n = min(args.n, max(0, limit - 64))
    if n < args.n:
        print(f"idle_conns: RLIMIT_NOFILE {limit} allows only {n} connections",
              file=sys.stderr, flush=True)

    host, port = args.target
    sel = selectors.DefaultSelector()
    pending = {}        # fd -> Conn, connecting or awaiting greeting
    idle = {}           # fd -> Conn, greeted
    launched = connected = banners = failed = 0
    t_end = time.monotonic() + args.deadline

    def drop(c, counted_failure=True):
        nonlocal failed
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        if counted_failure:
            failed += 1

    while not stop["flag"]:
        now = time.monotonic()
        if now >= t_end or (launched >= n and not pending):
            break
        while launched < n and len(pending) < args.inflight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            launched += 1
            try:
                rc = s.connect_ex((host, port))
            except OSError as e:
                rc = e.errno
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                failed += 1
                continue
            c = Conn(s, now)
            pending[s.fileno()] = c
            sel.register(s, selectors.EVENT_WRITE, c)
        for key, _ in sel.select(timeout=0.2):
            c = key.data
            fd = c.sock.fileno()
            if c.state == "connecting":
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    del pending[fd]
                    drop(c)
                    continue
                connected += 1
                c.state = "banner"
                sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                data = c.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                del pending[fd]
                drop(c)
                continue
            c.buf += data
            done, ok = greeting_done(c.buf)
            if not done:
                if len(c.buf) > 8192:
                    del pending[fd]
                    drop(c)
                continue
            del pending[fd]
            if not ok:
                drop(c)
                continue
            banners += 1
            c.state = "idle"
            c.buf = b""
            sel.unregister(c.sock)
            idle[fd] = c
        now = time.monotonic()
        for fd, c in list(pending.items()):
            if now - c.started > args.connect_timeout:
                del pending[fd]
                drop(c)
    for fd, c in list(pending.items()):
        drop(c)
    pending.clear()

    print(f"ready requested={args.n} connected={connected} banners={banners} "
          f"failed={failed + (args.n - launched)}", flush=True)

    # Hold: watch stdin for EOF and every idle socket for the server dropping it.
    try:
        sel.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
    except (ValueError, OSError):
        pass    # stdin is a regular file or /dev/null (epoll refuses it): hold until a signal
    for c in idle.values():
        sel.register(c.sock, selectors.EVENT_READ, c)
    t_hold = time.monotonic() + args.hold
    while not stop["flag"] and time.monotonic() < t_hold:
        for key, _ in sel.select(timeout=0.5):
            if key.data is None:
                try:
                    chunk = os.read(sys.stdin.fileno(), 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    stop["flag"] = True
                continue
            c = key.data
            try:
                data = c.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:          # server closed it (idle timeout?)
                idle.pop(c.sock.fileno(), None)
                drop(c, counted_failure=False)
    print(f"closed open={len(idle)}", flush=True)
    for c in idle.values():
        c.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
