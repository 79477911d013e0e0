#!/usr/bin/env python3
"""t/helpers/crashloop.py - the crash loop of docs/reliability.md (Jepsen's set checker), Python 3 stdlib only.

Clients send messages with unique tokens to a local recipient (Maildir) and a relayed one (Postfix's smtp-sink on
loopback) and record each token as ok (250 after the final dot), fail (refused, or never got to the final dot) or
unknown (the connection broke after the DATA command). Meanwhile the loop kills with SIGKILL, at random moments,
the whole process tree (then starts it again), the router alone or one worker (the master starts them again).
At the end the daemon runs until the queue drains, is restarted once (the start-up sweep), stopped, and checked:

  every ok token is delivered at least once to every recipient; no fail token is ever delivered; no copy is
  corrupted (the body is derived from the token); a duplicate exists only across a router crash (docs/
  reliability.md, "Duplicates": a Maildir duplicate's two files come from two router pids, a next hop's
  duplicate has a kill of the router between its two copies); the queue, state/ and the spool's tmp/ are
  empty, nothing is in corrupt/, no Maildir tmp/ file is left; the log has no sanitizer report or abort.

Prints a JSON summary on its last line and exits 0 when every check held, 1 otherwise.

  crashloop.py --bin src/luamta --kills 30 [--clients 3] [--seed N] [--keep]
"""
import argparse, hashlib, json, os, random, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time

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


def message_of(token):
    hdr = ("From: <sender@client.test>\nTo: <%s>, <%s>\nSubject: crashloop %s\nMessage-ID: <%s@client.test>\n"
           "X-Token: %s\n\n" % (LOCAL, REMOTE, token, token, token))
    return hdr + body_of(token)


def pgroup_members(pgid):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rfind(")") + 2:].split()
        if rest[0] not in ("Z", "X") and int(rest[2]) == pgid:
            out.append(int(name))
    return out


class Daemon:
    def __init__(self, binary, dir, port, sinkport, workers):
        self.bin, self.dir, self.port, self.workers = binary, dir, port, workers
        self.spool = dir + "/spool"
        self.logfile = dir + "/luamta.log"
        self.cfg = dir + "/luamta.lua"
        self.pgid = None
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

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self, timeout=20):
        mark = len(self.log())
        for attempt in range(3):
            with open(self.logfile, "a") as lf:
                p = subprocess.Popen(["setsid", self.bin, "run", "-c", self.cfg], stdout=lf, stderr=lf,
                                     stdin=subprocess.DEVNULL)
            self.pgid = p.pid
            self.popen = p
            deadline = time.time() + timeout
            while time.time() < deadline:
                text = self.log()[mark:]
                if (len(re.findall(r"worker \d+: ready", text)) >= self.workers and "router: ready" in text
                        and self.accepts()):
                    return
                if p.poll() is not None:
                    break
                time.sleep(0.02)
            self.kill_tree()
            time.sleep(0.5)
        raise RuntimeError("luamta did not start:\n" + self.log()[mark:])

    def accepts(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.5).close()
            return True
        except OSError:
            return False

    def kill_tree(self):
        if self.pgid is None:
            return
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in pgroup_members(self.pgid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while pgroup_members(self.pgid) and time.time() < deadline:
            time.sleep(0.01)
        self.popen.wait(5)      # reaped: the next start's pid-file check must not see a zombie
        self.pgid = None

    def stop(self, timeout=20):
        if self.pgid is None:
            return True
        try:
            os.kill(self.pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + timeout
        while pgroup_members(self.pgid) and time.time() < deadline:
            time.sleep(0.02)
        graceful = not pgroup_members(self.pgid)
        self.kill_tree()
        return graceful

    def child_pids(self, role):
        """The live pids of the router ("router") or of the workers ("worker"), from the log's ready lines."""
        pids = set(int(p) for p in re.findall(r"luamta\[(\d+)\] %s(?: \d+)?: ready" % role, self.log()))
        live = set(pgroup_members(self.pgid)) if self.pgid else set()
        return sorted(pids & live)

    def full(self):
        return (self.pgid is not None and len(self.child_pids("router")) == 1
                and len(self.child_pids("worker")) == self.workers and self.accepts())


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
        router_kills = []       # times at which a router died by our hand
        while sum(kills.values()) < a.kills:
            time.sleep(random.uniform(0.05, a.max_gap))
            kind = random.choice(("tree", "router", "worker"))
            if kind == "tree":
                router_kills.append(time.time())
                d.kill_tree()
                time.sleep(random.uniform(0, 0.3))      # clients meet a closed port for a moment
                d.start()
            else:
                pids = d.child_pids(kind)
                if not pids:
                    continue
                if kind == "router":
                    router_kills.append(time.time())
                os.kill(random.choice(pids), signal.SIGKILL)
                deadline = time.time() + 15
                time.sleep(0.05)
                while not d.full() and time.time() < deadline:
                    time.sleep(0.02)
                if not d.full():
                    problems.append("the master did not bring back the %s within 15 s" % kind)
                    break
            kills[kind] += 1
        stop.set()
        for c in clients:
            c.join(30)
        summary["kills"] = kills
        summary["loop_seconds"] = round(time.time() - started, 1)

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
        copies = {LOCAL: {}, REMOTE: {}}            # token -> [(writer, time)]
        corrupt = []
        for name in sorted(os.listdir(os.path.join(maildir, "new"))):
            with open(os.path.join(maildir, "new", name), errors="replace") as f:
                token, body = split_message(f.read())
            pid = re.search(r"P(\d+)_", name)
            if token is None or body != body_of(token):
                corrupt.append("Maildir " + name)
                continue
            copies[LOCAL].setdefault(token, []).append(pid.group(1) if pid else "?")
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
            if token is None or body != body_of(token):
                corrupt.append("sink " + name)
                continue
            if REMOTE not in raw:
                corrupt.append("sink %s: without %s" % (name, REMOTE))
            copies[REMOTE].setdefault(token, []).append(os.stat(path).st_mtime)
        if corrupt:
            problems.append("%d corrupted or truncated copies: %s" % (len(corrupt), corrupt[:5]))
        lost = [(t, r) for t, s in states.items() if s == "ok" for r in copies if t not in copies[r]]
        if lost:
            problems.append("%d acknowledged deliveries lost: %s" % (len(lost), lost[:5]))
        failed = [(t, r, results[t][1]) for r in copies for t in copies[r] if states.get(t) == "fail"]
        if failed:
            problems.append("%d refused messages delivered: %s" % (len(failed), failed[:5]))
        strangers = [t for r in copies for t in copies[r] if t not in states]
        if strangers:
            problems.append("copies of tokens never sent: %s" % strangers[:5])
        dups = {r: sum(len(v) - 1 for v in copies[r].values()) for r in copies}
        summary["duplicates"] = {"maildir": dups[LOCAL], "relay": dups[REMOTE]}
        summary["delivered_unknown"] = sum(1 for t, s in states.items() if s == "unknown" and t in copies[LOCAL])
        # Duplicates only in the documented windows: both need a router crash between the two copies.
        for token, writers in copies[LOCAL].items():
            if len(set(writers)) != len(writers):
                problems.append("%s: two Maildir copies written by the same router %s" % (token, writers))
        for token, times in copies[REMOTE].items():
            times.sort()
            for t1, t2 in zip(times, times[1:]):
                if not any(t1 - 1 <= k <= t2 + 1 for k in router_kills):
                    problems.append("%s: a next-hop duplicate with no router crash in between" % token)
        for sub in ("tmp", "incoming", "queue", "state", "corrupt"):
            p = os.path.join(d.spool, sub)
            left = [n for _, _, files in os.walk(p) for n in files]
            if left:
                problems.append("spool %s/ not empty: %s" % (sub, left[:5]))
        left = os.listdir(os.path.join(maildir, "tmp"))
        if left:
            problems.append("Maildir tmp/ not empty: %s" % left[:5])
        log = d.log()
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
