#!/usr/bin/env python3
"""Byte-exact check of a running tunnel: CONNS parallel connections each send COPIES
copies of a random block of a prime size (100,000,007 bytes, so no message or frame
boundary repeats) into the tunnel's local port; a sink on TARGET_PORT (the tunnel
server's --target) hashes what each connection delivers and compares it with SHA-256 of
what was sent. Exit status 0 if every connection delivered exactly its bytes.

    braid server --listen 127.0.0.1:17000 --target 127.0.0.1:18100 --psk-file k &
    braid client --listen 127.0.0.1:17001 --server 127.0.0.1:17000 --psk-file k &
    scripts/tunnel-integrity.py 17001 18100 3 20
"""
import hashlib
import os
import socket
import sys
import threading

BLOCK = 100_000_007


def main():
    tunnel, target, conns, copies = (int(a) for a in sys.argv[1:5])
    block = os.urandom(BLOCK)
    want = hashlib.sha256()
    for _ in range(copies):
        want.update(block)
    want, total = want.hexdigest(), copies * BLOCK
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", target))
    srv.listen(conns)
    results, lock = [], threading.Lock()

    def sink(conn):
        h, buf, n = hashlib.sha256(), bytearray(1 << 20), 0
        while k := conn.recv_into(buf):
            h.update(memoryview(buf)[:k])
            n += k
            if n == total:
                conn.sendall(b"k")  # the source waits for this before closing
        with lock:
            results.append((n, h.hexdigest() == want))
        conn.close()

    sinks = []

    def accept():
        for _ in range(conns):
            sinks.append(threading.Thread(target=sink, args=(srv.accept()[0],)))
            sinks[-1].start()

    def source():
        s = socket.create_connection(("127.0.0.1", tunnel))
        for _ in range(copies):
            s.sendall(block)
        s.recv(1)
        s.close()

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    sources = [threading.Thread(target=source) for _ in range(conns)]
    for t in sources:
        t.start()
    for t in sources:
        t.join()
    acceptor.join()
    for t in sinks:
        t.join()
    ok = all(good and n == total for n, good in results)
    for n, good in results:
        print(f"{n} bytes of {total}, hash {'equal' if good else 'DIFFERENT'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
