#!/usr/bin/python3
"""Reference side of bench/rpc.ts: the same call mix through libvirt's C client
(python3-libvirt), run one short round at a time on request so that bench/rpc.ts can
alternate it with rounds of its own client.

usage: rpc_c_client.py URI NAME...
  prints {"ready": true} once connected, then reads one JSON command per line on stdin:
    {"callers": N, "sessions": S, "seconds": T}
  N threads (N = 1: the calling thread itself) share S connections (thread k uses
  connection k % S) and run the mix for T seconds; prints one JSON line per round:
    {"calls": ..., "seconds": ..., "cpu_us": ...}   (cpu_us: this process, user + system)
"""
import json
import resource
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


def cpu_us():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1e6


def round_(uri, conns, names, callers, sessions, seconds):
    while len(conns) < sessions:
        conns.append(libvirt.open(uri))
    counts = []
    cpu0 = cpu_us()
    start = time.monotonic()
    stop_at = start + seconds
    if callers == 1:
        mix(conns[0], names, stop_at, counts, 0)
    else:
        workers = [
            threading.Thread(target=mix, args=(conns[k % sessions], names, stop_at, counts, k))
            for k in range(callers)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    elapsed = time.monotonic() - start
    return {"calls": sum(counts), "seconds": elapsed, "cpu_us": cpu_us() - cpu0}


def main(uri, names):
    conns = [libvirt.open(uri)]
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        result = round_(uri, conns, names, int(cmd["callers"]), int(cmd.get("sessions", 1)), float(cmd["seconds"]))
        print(json.dumps(result), flush=True)
    for c in conns:
        c.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
