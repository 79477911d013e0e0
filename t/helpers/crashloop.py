#!/usr/bin/env python3
"""t/helpers/crashloop.py - the crash loop of docs/reliability.md (Jepsen's set checker), Python 3 stdlib only.

Clients send messages with unique tokens to a local recipient (Maildir) and a relayed one (Postfix's smtp-sink on
loopback) and record each token as ok (250 after the final dot), fail (refused, or never got to the final dot) or
unknown (the connection broke after the DATA command). Meanwhile the loop kills with SIGKILL, at random moments,
the whole process tree (then starts it again), the router alone or one worker (the master starts them again).
At the end the daemon runs until the queue drains, is restarted once (the start-up sweep), stopped, and checked:

  every ok token is delivered at least once to every recipient; no fail token is ever delivered; no copy is
  corrupted (the body is derived from the token); a duplicate lies in a documented window (docs/reliability.md,
  "Duplicates"): a router ended between the start of one copy and the end of the next; the queue, state/ and
  the spool's tmp/ are empty, nothing is in corrupt/, no Maildir tmp/ file is left; the log has no sanitizer
  report or abort, and no child died of anything but our SIGKILL.

A killed child is back when the log has its successor's ready line after the kill, or when a live process has
its title ("luamta: router", "luamta: worker N") and is not the killed one (pid and start time): a killed process
can linger in uninterruptible I/O (state D) after its successor is up, so counting live children is wrong. Not
back within 60 s fails the run; returns over 15 s are counted as slow, and the longest is reported.

Evidence of time, never of pids (pids are reused within minutes: pid_max may be 32 768). A Maildir copy starts
at the time in its file name and ends at its mtime; a next-hop copy starts at the birth time of smtp-sink's dump
file (statx btime; ctime where the file system has none), which smtp-sink creates at MAIL FROM, and ends at its
mtime. A router ends between the moment we kill or stop it and the moment we see it gone (the master's "died"
line, or its whole process group gone).

Prints a JSON summary on its last line and exits 0 when every check held, 1 otherwise.

  crashloop.py --bin src/luamta --kills 30 [--clients 3] [--seed N] [--keep]
"""
import argparse, ctypes, ctypes.util, hashlib, json, os, random, re, shutil, signal, socket, subprocess, sys
import tempfile, threading, time

BACK_LIMIT = 60         # seconds a killed child (or the whole tree) may take to be back before the run fails
SLOW_RETURN = 15        # seconds over which a return counts as slow
CLOCK_SLACK = 0.05      # seconds: file times come from the kernel's coarse clock, ours from time.time()

LOCAL = "jdoe@example.test"
REMOTE = "u@relay.test"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def body_of(token):
    """The body of a message: derived from the token, so that any corruption shows. 1 to about 60 KiB."""
    n = 1 + int(hashlib.sha256(token.encode()).hexdigest()[:4], 16) % 900
    return "".join(hashlib.sha256(("%s/%d" % (token, i)).encode()).hexdigest() + "\n" for i in range(n))


_digests = {}


def body_intact(token, body):
    """Is body the one body_of(token) makes? Each token's digest is computed once: its copies are checked in
    turn, and a long run has about 100 000 tokens (one body each would take GB)."""
    if token not in _digests:
        _digests[token] = hashlib.sha256(body_of(token).encode()).digest()
    return hashlib.sha256(body.encode()).digest() == _digests[token]


def message_of(token):
    hdr = ("From: <sender@client.test>\nTo: <%s>, <%s>\nSubject: crashloop %s\nMessage-ID: <%s@client.test>\n"
           "X-Token: %s\n\n" % (LOCAL, REMOTE, token, token, token))
    return hdr + body_of(token)


def proc_stat(pid):
    """/proc/PID/stat's fields after the comm name (state first), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return None
    return st[st.rfind(")") + 2:].split()


def pgroup_members(pgid, with_start=False):
    """The live (not zombie) processes of a process group: pids, or (pid, start time) identities."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        rest = proc_stat(int(name))
        if rest and rest[0] not in ("Z", "X") and int(rest[2]) == pgid:
            out.append((int(name), int(rest[19])) if with_start else int(name))
    return out


def proc_title(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")[0].decode("latin-1")
    except OSError:
        return ""


class StatxTimestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32), ("reserved", ctypes.c_int32)]


class Statx(ctypes.Structure):
    _fields_ = [("stx_mask", ctypes.c_uint32), ("stx_blksize", ctypes.c_uint32), ("stx_attributes", ctypes.c_uint64),
                ("stx_nlink", ctypes.c_uint32), ("stx_uid", ctypes.c_uint32), ("stx_gid", ctypes.c_uint32),
                ("stx_mode", ctypes.c_uint16), ("pad", ctypes.c_uint16), ("stx_ino", ctypes.c_uint64),
                ("stx_size", ctypes.c_uint64), ("stx_blocks", ctypes.c_uint64),
                ("stx_attributes_mask", ctypes.c_uint64), ("stx_atime", StatxTimestamp),
                ("stx_btime", StatxTimestamp), ("stx_ctime", StatxTimestamp), ("stx_mtime", StatxTimestamp),
                ("spare", ctypes.c_uint64 * 14)]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
STATX_BTIME, AT_FDCWD = 0x800, -100


def birth_time(path):
    """(seconds, "btime"), from statx(2); (ctime, "ctime") when the file system or libc has no birth time."""
    sx = Statx()
    statx = getattr(_libc, "statx", None)
    if statx is not None and statx(AT_FDCWD, path.encode(), 0, STATX_BTIME, ctypes.byref(sx)) == 0 \
            and sx.stx_mask & STATX_BTIME:
        return sx.stx_btime.tv_sec + sx.stx_btime.tv_nsec / 1e9, "btime"
    return os.stat(path).st_ctime, "ctime"


def log_time(stamp):
    """A log line's time ("2026-12-07T15:26:34.986", local time) -> seconds since the epoch."""
    whole, _, ms = stamp.partition(".")
    return time.mktime(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(ms or 0) / 1000.0


class Daemon:
    def __init__(self, binary, dir, port, sinkport, workers):
        self.bin, self.dir, self.port, self.workers = binary, dir, port, workers
        self.spool = dir + "/spool"
        self.logfile = dir + "/luamta.log"
        self.cfg = dir + "/luamta.lua"
        self.pgid = None
        self.router_ends = []   # (earliest, latest): a router ended in between (our kill or stop, then gone)
        os.makedirs(dir + "/rules", exist_ok=True)
        with open(self.cfg, "w") as f:
            f.write("""-- written by t/helpers/crashloop.py
server = { hostname = "mx.example.test", listen = { "127.0.0.1:%d" }, spool = %s, workers = %d,
  rules_dir = %s, timeouts = { command = 30, data = 30 } }
local_domains = { "example.test" }
directory = { users = { { address = "postmaster@example.test" }, { address = "jdoe@example.test" } } }
inbound = { relay = { exclude = { "[127.0.0.1]" } } }
routing = { retry = { 1, 2 }, timeouts = { connect = 2, reply = 5 },
  routes = { ["relay.test"] = "[127.0.0.1]:%d" } }
delivery = { maildir = %s }
""" % (port, json.dumps(self.spool), workers, json.dumps(dir + "/rules"), sinkport,
                json.dumps(dir + "/mailboxes/%d/%u")))

    def log(self, since=0):
        """The log from byte offset since (a log_mark()): a long run's log grows to tens of MB, and is polled."""
        try:
            with open(self.logfile, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_mark(self):
        try:
            return os.path.getsize(self.logfile)
        except OSError:
            return 0

    def start(self, timeout=BACK_LIMIT):
        mark = self.log_mark()
        final = time.time() + timeout
        while time.time() < final:
            with open(self.logfile, "a") as lf:
                p = subprocess.Popen(["setsid", self.bin, "run", "-c", self.cfg], stdout=lf, stderr=lf,
                                     stdin=subprocess.DEVNULL)
            self.pgid = p.pid
            self.popen = p
            deadline = min(final, time.time() + 20)
            while time.time() < deadline:
                text = self.log(mark)
                if (len(re.findall(r"worker \d+: ready", text)) >= self.workers and "router: ready" in text
                        and self.accepts()):
                    return
                if p.poll() is not None:
                    break
                time.sleep(0.02)
            self.kill_tree()
            time.sleep(0.5)
        raise RuntimeError("luamta did not start:\n" + self.log(mark))

    def accepts(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.5).close()
            return True
        except OSError:
            return False

    def kill_tree(self):
        """SIGKILL to the whole tree; returns when every process of it is gone (a process in uninterruptible
        I/O dies late, and holds the port until then), within BACK_LIMIT seconds, or raises."""
        if self.pgid is None:
            return
        killed = time.time()
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in pgroup_members(self.pgid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.time() + BACK_LIMIT
        while pgroup_members(self.pgid) and time.time() < deadline:
            time.sleep(0.01)
        if pgroup_members(self.pgid):
            raise RuntimeError("the killed tree did not go within %d s: %s" % (BACK_LIMIT,
                               pgroup_members(self.pgid)))
        self.router_ends.append((killed, time.time()))
        self.popen.wait(5)      # reaped: the next start's pid-file check must not see a zombie
        self.pgid = None

    def stop(self, timeout=20):
        if self.pgid is None:
            return True
        stopped = time.time()
        try:
            os.kill(self.pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + timeout
        while pgroup_members(self.pgid) and time.time() < deadline:
            time.sleep(0.02)
        graceful = not pgroup_members(self.pgid)
        if graceful:
            self.router_ends.append((stopped, time.time()))
            self.popen.wait(5)
            self.pgid = None
        else:
            self.kill_tree()
        return graceful

    def children(self, kind):
        """The live children of a kind ("router", "worker"), by title: [((pid, start time), title)]."""
        if self.pgid is None:
            return []
        want = "luamta: router" if kind == "router" else "luamta: worker "
        out = []
        for ident in pgroup_members(self.pgid, with_start=True):
            title = proc_title(ident[0])
            if title == want or (kind == "worker" and title.startswith(want)):
                out.append((ident, title))
        return out

    def back(self, victim, title, mark):
        """Is the successor of the killed victim ((pid, start time), its title) up: its ready line in the log
        after mark, or a live process with the title that is not the victim?"""
        role = title[len("luamta: "):]
        for pid in re.findall(r"luamta\[(\d+)\] %s: ready" % re.escape(role), self.log(mark)):
            if int(pid) != victim[0]:
                return True
        return any(ident != victim and t == title for ident, t in self.children(role.split()[0]))

    def died_time(self, title, mark):
        """The time of the master's "router 0 died" / "worker N died" line after mark, or None."""
        role = title[len("luamta: "):]
        role = "router 0" if role == "router" else role
        m = re.search(r"^(\S+) luamta\[\d+\] master: error: %s died" % re.escape(role), self.log(mark), re.M)
        return log_time(m.group(1)) + 0.001 if m else None


class Sink:
    def __init__(self, dir, port):
        self.dir, self.port = dir, port
        self.dumpdir = dir + "/dump"
        os.makedirs(self.dumpdir)
        args = ["/usr/sbin/smtp-sink", "-d", self.dumpdir + "/%Y%m%d%H%M%S.", "-h", "sink.test", "-t", "30"]
        if os.getuid() == 0:
            os.chmod(dir, 0o755)
            shutil.chown(self.dumpdir, "nobody")
            args += ["-u", "nobody"]
        args += ["127.0.0.1:%d" % port, "64"]
        self.p = subprocess.Popen(["setsid"] + args, stdout=open(dir + "/sink.log", "a"), stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.3).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("smtp-sink did not start")

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait(5)


class Client(threading.Thread):
    def __init__(self, n, port, results, stop, lock):
        super().__init__(daemon=True)
        self.n, self.port, self.results, self.stop, self.lock = n, port, results, stop, lock
        self.seq = 0

    def record(self, token, state, why=""):
        with self.lock:
            self.results[token] = (state, why)

    def run(self):
        while not self.stop.is_set():
            self.seq += 1
            token = "t%d-%d-%s" % (self.n, self.seq, os.urandom(4).hex())
            self.one(token)
            time.sleep(random.uniform(0, 0.05))

    def one(self, token):
        stage = "connect"
        try:
            s = socket.create_connection(("127.0.0.1", self.port), 5)
        except OSError as e:
            self.record(token, "fail", "connect: %s" % e)
            time.sleep(0.2)
            return
        s.settimeout(15)
        f = s.makefile("rb")

        def reply():
            lines = []
            while True:
                line = f.readline()
                if not line.endswith(b"\n"):
                    raise ConnectionError("closed")
                lines.append(line.decode("latin-1").rstrip("\r\n"))
                if len(line) < 4 or line[3:4] != b"-":
                    return int(lines[-1][:3]), lines

        try:
            code, _ = reply()
            if code != 220:
                return self.record(token, "fail", "greeting %d" % code)
            for cmd, want in (("EHLO client.test", 250), ("MAIL FROM:<sender@client.test>", 250),
                              ("RCPT TO:<%s>" % LOCAL, 250), ("RCPT TO:<%s>" % REMOTE, 250), ("DATA", 354)):
                stage = cmd
                s.sendall(cmd.encode() + b"\r\n")
                code, lines = reply()
                if code != want:
                    return self.record(token, "fail", "%s: %s" % (cmd, lines[-1]))
            stage = "data"      # from here on, a broken connection leaves the outcome unknown
            data = message_of(token).replace("\n", "\r\n").encode() + b".\r\n"
            s.sendall(data)
            code, lines = reply()
            if code == 250:
                self.record(token, "ok", lines[-1])
            else:
                self.record(token, "fail", "dot: " + lines[-1])
            try:
                s.sendall(b"QUIT\r\n")
            except OSError:
                pass
        except (OSError, ConnectionError, ValueError) as e:
            self.record(token, "unknown" if stage == "data" else "fail", "%s: %s" % (stage, e))
        finally:
            s.close()


def split_message(raw):
    """raw (LF line ends) -> (token, body) of one delivered copy, or (None, None)."""
    m = re.search(r"^X-Token: (\S+)$", raw, re.M)
    i = raw.find("\n\n", m.start() if m else 0)
    if not m or i < 0:
        return None, None
    return m.group(1), raw[i + 2:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-gap", type=float, default=1.0, help="most seconds between two kills")
    ap.add_argument("--drain", type=float, default=90, help="seconds the queue may take to drain at the end")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "big")
    random.seed(seed)
    started = time.time()
    dir = tempfile.mkdtemp(prefix="luamta-crashloop.", dir=os.environ.get("TMPDIR", "/tmp"))
    os.chmod(dir, 0o755)            # smtp-sink runs as nobody when we are root: it must reach its dump directory
    problems = []
    summary = {"seed": seed, "dir": dir}
    sink = d = None
    stop = threading.Event()
    try:
        sinkport = free_port()
        sink = Sink(dir + "/sink", sinkport)
        d = Daemon(os.path.abspath(a.bin), dir, free_port(), sinkport, a.workers)
        d.start()
        results, lock = {}, threading.Lock()
        clients = [Client(i, d.port, results, stop, lock) for i in range(a.clients)]
        for c in clients:
            c.start()
        kills = {"tree": 0, "router": 0, "worker": 0}
        returns = []            # seconds from each kill to the killed part being back
        slowest = None
        while sum(kills.values()) < a.kills:
            time.sleep(random.uniform(0.05, a.max_gap))
            kind = random.choice(("tree", "router", "worker"))
            killed = time.time()
            if kind == "tree":
                d.kill_tree()
                time.sleep(random.uniform(0, 0.3))      # clients meet a closed port for a moment
                d.start()
                what = "the tree"
            else:
                candidates = d.children(kind)
                if not candidates:
                    continue                            # not yet forked again after the last kill
                victim, title = random.choice(candidates)
                mark = d.log_mark()
                killed = time.time()
                try:
                    os.kill(victim[0], signal.SIGKILL)
                except ProcessLookupError:
                    continue
                deadline = killed + BACK_LIMIT
                while not d.back(victim, title, mark) and time.time() < deadline:
                    time.sleep(0.02)
                if not d.back(victim, title, mark):
                    problems.append("the master did not bring back the %s (pid %d) within %d s"
                                    % (title, victim[0], BACK_LIMIT))
                    break
                if kind == "router":
                    died = d.died_time(title, mark)
                    d.router_ends.append((killed, max(died, killed) if died else time.time()))
                what = title
            took = time.time() - killed
            returns.append(took)
            if slowest is None or took > slowest[0]:
                slowest = (took, what, sum(kills.values()) + 1)
            kills[kind] += 1
            if sum(kills.values()) % 100 == 0:      # progress of a long run, on stderr
                print("crashloop: %d kills in %.0f s, %d tokens, longest return %.1f s" % (
                    sum(kills.values()), time.time() - started, len(results), slowest[0]), file=sys.stderr,
                    flush=True)
        stop.set()
        for c in clients:
            c.join(30)
        summary["kills"] = kills
        summary["loop_seconds"] = round(time.time() - started, 1)
        summary["returns"] = {"slow": sum(1 for r in returns if r > SLOW_RETURN),
                              "longest": round(slowest[0], 2) if slowest else None,
                              "longest_was": "%s, kill %d" % (slowest[1], slowest[2]) if slowest else None,
                              "median": round(sorted(returns)[len(returns) // 2], 2) if returns else None}

        # Drain: the queue empties with the daemon running (the sink is up all along).
        deadline = time.time() + a.drain
        def queued():
            return [n for sub in ("incoming", "queue", "state")
                    for _, _, files in os.walk(os.path.join(d.spool, sub)) for n in files]
        while time.time() < deadline and queued():
            time.sleep(0.2)
        left = queued()
        if left:
            problems.append("the queue did not drain in %d s: %s" % (a.drain, left[:10]))
        # One more restart: its start-up sweep takes the leftovers of the last kills (Maildir tmp/).
        d.stop()
        d.start()
        maildir = os.path.join(dir, "mailboxes", "example.test", "jdoe")
        deadline = time.time() + 10
        while time.time() < deadline and os.listdir(os.path.join(maildir, "tmp")):
            time.sleep(0.1)
        if not d.stop():
            problems.append("the daemon did not stop on SIGTERM")
        time.sleep(0.5)                 # the sink finishes writing its last dump

        # The checker.
        states = {t: s for t, (s, _) in results.items()}
        count = {k: sum(1 for s in states.values() if s == k) for k in ("ok", "fail", "unknown")}
        summary["tokens"] = count
        copies = {LOCAL: {}, REMOTE: {}}            # token -> [(start, end, name)] of each copy
        corrupt = []
        birth_kinds = set()
        for name in sorted(os.listdir(os.path.join(maildir, "new"))):
            path = os.path.join(maildir, "new", name)
            with open(path, errors="replace") as f:
                token, body = split_message(f.read())
            begun = re.match(r"(\d+)\.M(\d+)P", name)
            if token is None or not body_intact(token, body) or not begun:
                corrupt.append("Maildir " + name)
                continue
            copies[LOCAL].setdefault(token, []).append(
                (int(begun.group(1)) + int(begun.group(2)) / 1e6, os.stat(path).st_mtime, name))
        for name in os.listdir(sink.dumpdir):
            path = os.path.join(sink.dumpdir, name)
            with open(path, errors="replace") as f:
                raw = f.read()
            if raw == "":
                continue
            m = re.search(r"^Received: from [^\n]*\n[^\n]*\n[^\n]*\n", raw, re.M)
            if raw.endswith("\n\n"):
                raw = raw[:-1]          # smtp-sink ends each dump with an empty line of its own
            token, body = split_message(raw[m.end():] if m else raw)
            if token is None or not body_intact(token, body):
                corrupt.append("sink " + name)
                continue
            if REMOTE not in raw:
                corrupt.append("sink %s: without %s" % (name, REMOTE))
            born, kind = birth_time(path)
            birth_kinds.add(kind)
            copies[REMOTE].setdefault(token, []).append((born, os.stat(path).st_mtime, name))
        summary["copy_start"] = {"maildir": "file name", "relay": "/".join(sorted(birth_kinds)) or "-"}
        summary["corrupt"] = len(corrupt)
        if corrupt:
            problems.append("%d corrupted or truncated copies: %s" % (len(corrupt), corrupt[:5]))
        lost = [(t, r) for t, s in states.items() if s == "ok" for r in copies if t not in copies[r]]
        summary["lost"] = len(lost)
        if lost:
            problems.append("%d acknowledged deliveries lost: %s" % (len(lost), lost[:5]))
        failed = [(t, r, results[t][1]) for r in copies for t in copies[r] if states.get(t) == "fail"]
        summary["refused_delivered"] = len(failed)
        if failed:
            problems.append("%d refused messages delivered: %s" % (len(failed), failed[:5]))
        strangers = [t for r in copies for t in copies[r] if t not in states]
        if strangers:
            problems.append("copies of tokens never sent: %s" % strangers[:5])
        dups = {r: sum(len(v) - 1 for v in copies[r].values()) for r in copies}
        summary["delivered_unknown"] = sum(1 for t, s in states.items() if s == "unknown" and t in copies[LOCAL])
        # Duplicates only in the documented windows: a router ended between the start of one copy and the end
        # of the next (the two copies sorted by their start).
        in_window = {LOCAL: 0, REMOTE: 0}
        outside = []
        for r in copies:
            for token, spans in copies[r].items():
                spans.sort()
                for (start1, _, name1), (_, end2, name2) in zip(spans, spans[1:]):
                    if any(lo <= end2 + CLOCK_SLACK and hi >= start1 - CLOCK_SLACK for lo, hi in d.router_ends):
                        in_window[r] += 1
                    else:
                        outside.append("%s %s: %s then %s" % ("Maildir" if r == LOCAL else "relay", token, name1,
                                                             name2))
        summary["duplicates"] = {"maildir": dups[LOCAL], "relay": dups[REMOTE], "maildir_in_window": in_window[LOCAL],
                                 "relay_in_window": in_window[REMOTE]}
        if outside:
            problems.append("%d duplicates with no router end between the start of one copy and the end of the "
                            "next: %s" % (len(outside), outside[:5]))
        summary["left"] = {}
        for sub in ("tmp", "incoming", "queue", "state", "corrupt"):
            p = os.path.join(d.spool, sub)
            left = [n for _, _, files in os.walk(p) for n in files]
            summary["left"]["spool/" + sub] = len(left)
            if left:
                problems.append("spool %s/ not empty: %s" % (sub, left[:5]))
        left = os.listdir(os.path.join(maildir, "tmp"))
        summary["left"]["maildir/tmp"] = len(left)
        if left:
            problems.append("Maildir tmp/ not empty: %s" % left[:5])
        log = d.log()
        unkilled = [l for l in log.splitlines() if re.search(r"master: error: \w+ \d+ died \(", l)
                    and "(signal 9)" not in l]
        if unkilled:
            problems.append("%d children died of something else than our SIGKILL: %s" % (len(unkilled), unkilled[0]))
        for bad in ("AddressSanitizer", "runtime error:", "double free", "free(): ", "fatal_bug", "corrupt"):
            if bad in log:
                line = next(l for l in log.splitlines() if bad in l)
                problems.append("the log has %r: %s" % (bad, line))
        summary["seconds"] = round(time.time() - started, 1)
    except Exception as e:          # noqa: BLE001 - everything is a failed run, with its reason
        problems.append("harness: %r" % e)
    finally:
        stop.set()
        if d is not None:
            d.kill_tree()
        if sink is not None:
            sink.stop()
        summary["problems"] = problems
        if a.keep or problems:
            summary["kept"] = dir
        else:
            shutil.rmtree(dir, ignore_errors=True)
    print(json.dumps(summary))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
