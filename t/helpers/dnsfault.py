#!/usr/bin/env python3
"""t/helpers/dnsfault.py - a small DNS server that fails on purpose, for t/integration/fault_dns_spec.lua.

    python3 dnsfault.py CONTROL PORTFILE QUERYLOG

Listens on 127.0.0.1 (UDP and TCP, the same free port, written to PORTFILE once both are bound) and answers
from CONTROL, a JSON file read again whenever it changes, so that a spec can turn a fault on and off under a
running daemon:

    { "records": { "mx.ok.test": { "A": ["127.0.0.61"] },
                   "ok.test": { "MX": [[10, "mx.ok.test"]] },
                   "61.0.0.127.in-addr.arpa": { "PTR": ["mx.ok.test"] },
                   "txt.test": { "TXT": ["v=spf1 -all"] } },
      "faults": { "bad.test": "servfail" },      # per name: the name and every name under it
      "mode": "answer" }                         # per run: the fault of every name without its own

Faults: "answer" (none), "refused" (RCODE 5), "servfail" (RCODE 2), "blackhole" (reads the query, never
answers, over UDP or TCP), "tc" (over UDP an empty answer with the TC bit; over TCP the real answer) and
"tc_tcp_refused" (TC over UDP, REFUSED over TCP). A name that has no records is NXDOMAIN, a name with records
but none of the type asked is NODATA. Every record has TTL 0, so the resolver under test caches nothing.
Each query is appended to QUERYLOG as one line: "<udp|tcp> <TYPE> <name> <what was done>".
Python 3 standard library only; the spec runs it under timeout(1) in its own process group.
"""
import json
import os
import socket
import struct
import sys
import threading

TYPES = {1: "A", 2: "NS", 5: "CNAME", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA"}
CODES = {v: k for k, v in TYPES.items()}
RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_REFUSED = 2, 3, 5

control_path, portfile, querylog = sys.argv[1], sys.argv[2], sys.argv[3]
control = {"stamp": None, "data": {}}
lock = threading.Lock()


def current():
    """The control file's contents, read again when its size or mtime changed (a half-written file is kept
    from the last good read: the spec renames a new file into place, so this only guards against surprises)."""
    with lock:
        try:
            st = os.stat(control_path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp != control["stamp"]:
                with open(control_path) as f:
                    control["data"] = json.load(f)
                control["stamp"] = stamp
        except (OSError, ValueError):
            pass
        return control["data"]


def log(line):
    with lock:
        with open(querylog, "a") as f:
            f.write(line + "\n")


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def parse_question(msg):
    """(id, flags, qname, qtype, end of question) of a query, or None."""
    if len(msg) < 12:
        return None
    qid, flags, qd = struct.unpack(">HHH", msg[:6])
    if qd < 1:
        return None
    pos, labels = 12, []
    while True:
        if pos >= len(msg):
            return None
        n = msg[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0 or pos + n > len(msg):
            return None
        labels.append(msg[pos:pos + n].decode("ascii", "replace"))
        pos += n
    if pos + 4 > len(msg):
        return None
    qtype = struct.unpack(">H", msg[pos:pos + 2])[0]
    return qid, flags, ".".join(labels).lower(), qtype, pos + 4


def fault_of(data, name):
    faults = data.get("faults", {})
    parts = name.split(".")
    for i in range(len(parts)):
        zone = ".".join(parts[i:])
        if zone in faults:
            return faults[zone]
    return data.get("mode", "answer")


def rdata(qtype, value):
    if qtype == "A":
        return socket.inet_pton(socket.AF_INET, value)
    if qtype == "AAAA":
        return socket.inet_pton(socket.AF_INET6, value)
    if qtype == "MX":
        return struct.pack(">H", int(value[0])) + encode_name(value[1])
    if qtype in ("PTR", "CNAME", "NS"):
        return encode_name(value)
    if qtype == "TXT":
        strings = value if isinstance(value, list) else [value]
        out = b""
        for s in strings:
            b = s.encode()
            out += bytes([len(b)]) + b
        return out
    raise ValueError(qtype)


def reply(query, rcode, answers=(), tc=False):
    qid, flags, _, qtype, qend = query[:5]
    rd = flags & 0x0100
    out_flags = 0x8000 | 0x0400 | rd | 0x0080 | (0x0200 if tc else 0) | rcode   # QR AA RD RA TC RCODE
    head = struct.pack(">HHHHHH", qid, out_flags, 1, len(answers), 0, 0)
    body = b""
    for rtype, value in answers:
        data = rdata(rtype, value)
        body += struct.pack(">HHHIH", 0xC00C, CODES[rtype], 1, 0, len(data)) + data
    return head + query[5][12:qend] + body


def answer(msg, proto):
    """The reply to msg over proto ("udp" or "tcp"), or None to say nothing."""
    q = parse_question(msg)
    if q is None:
        return None
    q = q + (msg,)
    data = current()
    name, tname = q[2], TYPES.get(q[3], str(q[3]))
    fault = fault_of(data, name)
    what = fault
    if fault == "blackhole":
        out = None
    elif fault == "refused":
        out = reply(q, RCODE_REFUSED)
    elif fault == "servfail":
        out = reply(q, RCODE_SERVFAIL)
    elif fault in ("tc", "tc_tcp_refused") and proto == "udp":
        out, what = reply(q, 0, tc=True), "truncated"
    elif fault == "tc_tcp_refused":
        out, what = reply(q, RCODE_REFUSED), "refused"
    else:
        records = data.get("records", {}).get(name)
        if records is None:
            out, what = reply(q, RCODE_NXDOMAIN), "nxdomain"
        else:
            rrs = [(tname, v) for v in records.get(tname, [])]
            out, what = reply(q, 0, rrs), "answer %d" % len(rrs)
    log("%s %s %s %s" % (proto, tname, name, what))
    return out


def serve_tcp_conn(conn):
    conn.settimeout(30)
    try:
        while True:
            head = conn.recv(2)
            if len(head) < 2:
                return
            n = struct.unpack(">H", head)[0]
            msg = b""
            while len(msg) < n:
                chunk = conn.recv(n - len(msg))
                if not chunk:
                    return
                msg += chunk
            out = answer(msg, "tcp")
            if out is not None:
                conn.sendall(struct.pack(">H", len(out)) + out)
    except OSError:
        pass
    finally:
        conn.close()


def serve_tcp(listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_tcp_conn, args=(conn,), daemon=True).start()


def main():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for _ in range(50):      # a port free for both: take UDP's, try TCP on it
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        try:
            tcp.bind(("127.0.0.1", port))
            break
        except OSError:
            udp.close()
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        sys.exit("dnsfault: no port free for UDP and TCP")
    tcp.listen(64)
    threading.Thread(target=serve_tcp, args=(tcp,), daemon=True).start()
    with open(portfile + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(portfile + ".tmp", portfile)
    while True:
        msg, peer = udp.recvfrom(65535)
        out = answer(msg, "udp")
        if out is not None:
            udp.sendto(out, peer)


if __name__ == "__main__":
    main()
