#!/usr/bin/env python3
"""t/opt/hostile_hop.py - a next hop that misbehaves on its first connection, for fault_nexthop_spec.lua.

  hostile_hop.py IP PORT MODE DUMP

The first connection plays MODE (once: a connection the client reuses behaves); every later one is a plain SMTP server that takes the message and appends it
to DUMP (one "--- from rcpt,rcpt" line, then the data). Modes: longline (a 1 MiB reply line to EHLO), endless
(an EHLO reply of "250-" lines that never ends), silence (the banner, then nothing), data250 (250 to DATA
before the dot), rcpt354 (354 to RCPT), reset (a connection reset in the middle of the data). Stdlib only.
"""
import socket, sys, threading, time

ip, port, mode, dump = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
first = [True]
lock = threading.Lock()


def lines(f):
    while True:
        ln = f.readline()
        if not ln:
            return
        yield ln.rstrip(b"\r\n")


def good(c, f, hostile=None):
    c.sendall(b"220 hop.test ESMTP\r\n")
    sender, rcpts = "", []
    it = lines(f)
    for ln in it:
        cmd = ln[:4].upper()
        if cmd in (b"EHLO", b"HELO"):
            if hostile == "longline":
                c.sendall(b"250-" + b"x" * (1 << 20))
                time.sleep(30)
                return
            if hostile == "endless":
                try:
                    while True:
                        c.sendall(b"250-still going " + b"y" * 60 + b"\r\n")
                        time.sleep(0.001)
                except OSError:
                    return
            c.sendall(b"250-hop.test\r\n250 8BITMIME\r\n")
        elif cmd == b"MAIL":
            sender = ln.decode(errors="replace")
            c.sendall(b"250 2.1.0 Ok\r\n")
        elif cmd == b"RCPT":
            rcpts.append(ln.decode(errors="replace"))
            c.sendall(b"354 go ahead\r\n" if hostile == "rcpt354" else b"250 2.1.5 Ok\r\n")
            if hostile == "rcpt354":
                hostile = None          # once: a reused connection behaves
        elif cmd == b"DATA":
            if hostile == "data250":
                c.sendall(b"250 2.0.0 Ok: queued before the data\r\n")
                hostile = None
                continue
            c.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            body = []
            for d in it:
                if d == b".":
                    break
                body.append(d)
                if hostile == "reset" and len(body) >= 2:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    c.close()
                    return
            with lock, open(dump, "ab") as o:
                o.write(("--- %s %s\n" % (sender, ",".join(rcpts))).encode() + b"\n".join(body) + b"\n")
            c.sendall(b"250 2.0.0 Ok: queued\r\n")
        elif cmd == b"QUIT":
            c.sendall(b"221 Bye\r\n")
            return
        else:
            c.sendall(b"250 Ok\r\n")


def serve(c):
    with lock:
        hostile = mode if first[0] else None
        first[0] = False
    try:
        f = c.makefile("rb")
        if hostile == "silence":
            c.sendall(b"220 hop.test ESMTP\r\n")
            time.sleep(60)
            return
        good(c, f, hostile)
    except OSError:
        pass
    finally:
        try:
            c.close()
        except OSError:
            pass


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
