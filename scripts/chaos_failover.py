#!/usr/bin/env python3
"""Chaos trials for `flowsteer guard` on the VM lab (run by scripts/chaos-failover.sh).

Each trial: a numbered UDP stream (RATE packets/s, one datagram per ms batch)
runs from the web1 VM to the db1 VM through flowsteer while a TCP stream runs
alongside; the dataplane is killed (kill -9) or stopped (SIGSTOP) and, after
HOLD seconds on the bypass, restarted (after a kill) or continued (SIGCONT).

Measured per trial, from what arrived in db1 (CLOCK_MONOTONIC, shared by all
processes on the host):
  failover_ms  the longest run of lost sequence numbers around the fault, as
               time at the sending rate (a late sender cannot fake it)
  failback_ms  the same from the restart/SIGCONT to 200 ms after the guard
               logged the removal of its bypass
  steady_lost  the longest run of lost packets outside both windows (the
               dataplane's own losses on a loaded machine)
  *_gap_ms     the largest gap between arrivals in the same windows (includes
               the sender's own stalls on a loaded machine)
  lost      sequence numbers that never arrived
  dup       sequence numbers that arrived more than once (must be 0)
and from the guard's log: the time it took to install the bypass.

Prints one line per trial and a summary (median and worst) as JSON on the
last line. Exit status 1 if a trial saw duplicates, the TCP stream broke, or
traffic did not resume.
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

PORT = 5999
TCP_PORT = 5998


def ns(lab, vm):
    return ["ip", "netns", "exec", f"{lab}-{vm}"]


def receiver(out, seconds):
    """In db1: records (seq, arrival) of every datagram; writes them as binary."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("0.0.0.0", PORT))
    s.settimeout(0.2)
    end = time.monotonic() + seconds
    recs = bytearray()
    while time.monotonic() < end:
        try:
            d = s.recv(64)
        except socket.timeout:
            continue
        recs += struct.pack("<Qd", struct.unpack_from("<Q", d)[0], time.monotonic())
    with open(out, "wb") as f:
        f.write(recs)


def sender(dst, rate, seconds):
    """In web1: RATE datagrams/s, numbered from 0, in 1 ms batches."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    per_ms = max(1, rate // 1000)
    seq = 0
    t0 = time.monotonic()
    tick = 0
    pad = b"\0" * 56
    while True:
        now = time.monotonic()
        if now - t0 >= seconds:
            break
        for _ in range(per_ms):
            try:
                s.sendto(struct.pack("<Q", seq) + pad, (dst, PORT))
            except OSError:
                pass
            seq += 1
        tick += 1
        delay = t0 + tick / 1000.0 - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def tcp_server(out):
    """In db1: accepts one connection, spot-checks the byte pattern (byte n of
    the stream is n mod 256), answers the client's close, writes what it saw."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", TCP_PORT))
    ls.listen(1)
    c, _ = ls.accept()
    n, bad = 0, 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        if d[0] != n & 0xFF or d[-1] != (n + len(d) - 1) & 0xFF:
            bad += 1
        n += len(d)
    c.sendall(b"k")
    c.close()
    with open(out, "w") as f:
        json.dump({"bytes": n, "bad_chunks": bad, "closed": "eof"}, f)


def tcp_client(dst, seconds):
    """In web1: streams ~2 MB/s for SECONDS, then closes cleanly; exit 0 if every send worked."""
    c = socket.create_connection((dst, TCP_PORT), timeout=5)
    c.settimeout(30)
    block = bytes(range(256)) * 64
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        c.sendall(block)
        time.sleep(0.008)
    c.shutdown(socket.SHUT_WR)
    c.recv(1)
    c.close()


def analyse(path, t_fault, t_back, t_handback, t_end):
    raw = open(path, "rb").read()
    recs = [struct.unpack_from("<Qd", raw, i) for i in range(0, len(raw), 16)]
    seqs = {}
    for seq, t in recs:
        seqs[seq] = seqs.get(seq, 0) + 1
    dup = sum(c - 1 for c in seqs.values() if c > 1)
    top = max(seqs) if seqs else -1
    lost = (top + 1) - len(seqs)
    times = sorted(t for _, t in recs)

    def gap(a, b):
        g, prev = 0.0, None
        for t in times:
            if t < a:
                prev = t
                continue
            if t > b:
                if prev is not None and prev <= b:
                    g = max(g, t - prev)
                break
            if prev is not None:
                g = max(g, t - prev)
            prev = t
        return g * 1e3

    # Runs of missing sequence numbers, placed at the arrival of the packet
    # before each run; a run's length / rate is an outage that a stalled
    # sender cannot fake (it sends late, not never).
    arrival = {}
    for seq, t in recs:
        arrival.setdefault(seq, t)
    runs = []
    prev = None
    for seq in sorted(seqs):
        if prev is not None and seq > prev + 1:
            runs.append((arrival[prev], seq - prev - 1))
        prev = seq

    def loss(a, b):
        return max([n for t, n in runs if a <= t <= b], default=0)

    after_back = [t for t in times if t > t_back]
    return {
        "received": len(recs),
        "dup": dup,
        "lost": lost,
        "failover_lost": loss(t_fault - 0.05, t_back),
        "failback_lost": loss(t_back, t_handback + 0.2),
        "steady_lost": max(loss(t_end - 3.5, t_fault - 0.05), loss(t_handback + 0.2, t_end + 1)),
        "failover_gap_ms": round(gap(t_fault - 0.002, t_back), 2),
        "failback_gap_ms": round(gap(t_back, t_handback + 0.2), 2),
        "resumed": len(after_back) > 0 and after_back[-1] > t_end - 0.3,
    }


class Proc:
    def __init__(self, args, log):
        self.log = open(log, "ab")
        self.p = subprocess.Popen(args, stdout=self.log, stderr=self.log)

    def kill(self):
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, signal.SIGCONT)
                self.p.send_signal(signal.SIGTERM)
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def wait_for(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--role")
    ap.add_argument("--out")
    ap.add_argument("--dst", default="10.77.0.21")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--lab", default=os.environ.get("LAB", "ch"))
    ap.add_argument("--bin")
    ap.add_argument("--config")
    ap.add_argument("--dir")
    ap.add_argument("--fault", choices=["kill", "stop"], default="kill")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--hold", type=float, default=1.0)
    a = ap.parse_args()
    if a.role == "receiver":
        return receiver(a.out, a.seconds)
    if a.role == "sender":
        return sender(a.dst, a.rate, a.seconds)
    if a.role == "tcp-server":
        return tcp_server(a.out)
    if a.role == "tcp-client":
        return tcp_client(a.dst, a.seconds)

    me = os.path.abspath(__file__)
    d = a.dir
    guard_log = os.path.join(d, "guard.log")
    dp_log = os.path.join(d, "dataplane.log")
    # A control socket of its own: never the default one another flowsteer may serve.
    ctl_sock = os.path.join(d, "ctl.sock")
    procs = []
    ok = True
    results = []
    try:
        guard = Proc([a.bin, "-v", "guard", "-c", a.config], guard_log)
        procs.append(guard)
        dp = Proc([a.bin, "-v", "run", "--socket", ctl_sock, "-c", a.config], dp_log)
        procs.append(dp)

        def guard_lines():
            return open(guard_log, errors="replace").read().splitlines()

        def handed_back(n):
            return sum("bypass removed" in l for l in guard_lines()) >= n

        if not wait_for(lambda: handed_back(1), 20):
            print("chaos: the dataplane never took over from the guard's bypass", file=sys.stderr)
            return 1
        trial_s = 0.5 + a.hold + 2.0
        total = a.trials * (trial_s + 0.5) + 5
        tcp_out = os.path.join(d, "tcp.json")
        tsrv = Proc(ns(a.lab, "db1") + [sys.executable, me, "--role", "tcp-server", "--out", tcp_out], os.path.join(d, "tcp-server.log"))
        procs.append(tsrv)
        time.sleep(0.3)
        tcli = Proc(ns(a.lab, "web1") + [sys.executable, me, "--role", "tcp-client", "--dst", a.dst, "--seconds", str(total)], os.path.join(d, "tcp-client.log"))
        procs.append(tcli)
        for i in range(a.trials):
            out = os.path.join(d, f"rx-{i}.bin")
            rx = Proc(ns(a.lab, "db1") + [sys.executable, me, "--role", "receiver", "--out", out, "--seconds", str(trial_s + 0.4)], os.path.join(d, "rx.log"))
            procs.append(rx)
            time.sleep(0.2)
            tx = Proc(ns(a.lab, "web1") + [sys.executable, me, "--role", "sender", "--dst", a.dst, "--rate", str(a.rate), "--seconds", str(trial_s)], os.path.join(d, "tx.log"))
            procs.append(tx)
            time.sleep(0.5)
            installs_before = sum("bypass installed" in l for l in guard_lines())
            removed_before = sum("bypass removed" in l for l in guard_lines())
            t_fault = time.monotonic()
            if a.fault == "kill":
                os.kill(dp.p.pid, signal.SIGKILL)
                dp.p.wait()
                dp.log.close()
            else:
                os.kill(dp.p.pid, signal.SIGSTOP)
            wait_for(lambda: sum("bypass installed" in l for l in guard_lines()) > installs_before, 2)
            time.sleep(max(0.0, t_fault + a.hold - time.monotonic()))
            t_back = time.monotonic()
            if a.fault == "kill":
                dp = Proc([a.bin, "-v", "run", "--socket", ctl_sock, "-c", a.config], dp_log)
                procs.append(dp)
            else:
                os.kill(dp.p.pid, signal.SIGCONT)
            back = wait_for(lambda: handed_back(removed_before + 1), 10)
            t_handback = time.monotonic()
            tx.p.wait(trial_s + 5)
            rx.p.wait(10)
            t_end = t_fault + (trial_s - 0.5)
            r = analyse(out, t_fault, t_back, t_handback, t_end)
            m = [re.search(r"bypass installed in (\d+) us", l) for l in guard_lines()]
            inst = [int(x.group(1)) for x in m if x]
            r["install_us"] = inst[-1] if len(inst) > installs_before else None
            mb = [re.search(r"bypass removed in (\d+) us", l) for l in guard_lines()]
            rem = [int(x.group(1)) for x in mb if x]
            r["remove_us"] = rem[-1] if rem else None
            r["restart_to_handback_ms"] = round((t_handback - t_back) * 1e3, 1) if back else None
            # Outage = the longest run of lost packets, in ms at the sending rate.
            r["failover_ms"] = round(r["failover_lost"] * 1e3 / a.rate, 2)
            r["failback_ms"] = round(r["failback_lost"] * 1e3 / a.rate, 2)
            r["trial"] = i
            results.append(r)
            print(json.dumps(r), flush=True)
            if r["dup"] or not r["resumed"] or not back:
                ok = False
            os.remove(out)
        tcli.p.wait(total + 30)
        # After losses TCP may be in a long retransmission backoff: give the FIN time.
        tsrv.p.wait(60)
        tcp = json.load(open(tcp_out)) if os.path.exists(tcp_out) else {"closed": "never"}
        tcp["client_exit"] = tcli.p.returncode
        if tcli.p.returncode != 0 or tcp.get("closed") != "eof" or tcp.get("bad_chunks"):
            ok = False
    finally:
        for p in reversed(procs):
            p.kill()

    def stat(key):
        v = [r[key] for r in results if r.get(key) is not None]
        return {"median": round(statistics.median(v), 2), "worst": max(v), "n": len(v)} if v else None

    summary = {
        "fault": a.fault,
        "trials": len(results),
        "rate_pps": a.rate,
        "failover_ms": stat("failover_ms"),
        "failback_ms": stat("failback_ms"),
        "failover_gap_ms": stat("failover_gap_ms"),
        "failback_gap_ms": stat("failback_gap_ms"),
        "install_us": stat("install_us"),
        "remove_us": stat("remove_us"),
        "restart_to_handback_ms": stat("restart_to_handback_ms"),
        "steady_lost": stat("steady_lost"),
        "dup_total": sum(r["dup"] for r in results),
        "lost_total": sum(r["lost"] for r in results),
        "tcp": tcp if results else None,
        "ok": ok,
    }
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
