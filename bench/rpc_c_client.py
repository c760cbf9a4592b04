#!/usr/bin/python3
"""Reference side of bench/rpc.ts: the same call mix through libvirt's C client
(python3-libvirt), sequentially and with N threads sharing one connection.

usage: rpc_c_client.py URI SECONDS THREADS NAME...   -> prints one JSON line
"""
import json
import sys
import threading
import time

import libvirt


def mix(conn, names, stop_at, counter, offset):
    i = offset
    calls = 0
    while time.monotonic() < stop_at:
        dom = conn.lookupByName(names[i % len(names)])
        dom.XMLDesc(0)
        dom.info()
        calls += 3
        i += 1
    counter.append(calls)


def run(uri, seconds, threads, names):
    conn = libvirt.open(uri)
    # warm-up, as on the TypeScript side
    mix(conn, names, time.monotonic() + 0.5, [], 0)
    seq = []
    start = time.monotonic()
    mix(conn, names, start + seconds, seq, 0)
    seq_rate = seq[0] / (time.monotonic() - start)

    conc = []
    start = time.monotonic()
    stop_at = start + seconds
    workers = [threading.Thread(target=mix, args=(conn, names, stop_at, conc, k)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    conc_rate = sum(conc) / (time.monotonic() - start)
    conn.close()
    print(json.dumps({"c_seq_calls_s": round(seq_rate, 1), "c_conc_calls_s": round(conc_rate, 1)}))


if __name__ == "__main__":
    run(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
