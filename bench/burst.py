"""Burst: N sessions opened at once, each from its own loopback address, against DNS checks.

All N sessions (default 500) connect in the same instant, each from its own address
(127.B.x.y, bound before connect), and send one small message to bench@example.test through
`smtpd_recipient_restrictions = reject_unknown_sender_domain, reject_rbl_client` x 3 (lists
that answer NXDOMAIN; the sender domain resolves through a wildcard MX), the test DNS server
answering every query after `--delay` (50 ms). Mode `plain`: the client's address is the
TCP peer, so a server can start its lookups at connect. Mode `xclient`: every session
connects from 127.0.0.1 and announces its address with `XCLIENT ADDR=127.B.x.y
NAME=[UNAVAILABLE]` (the PROXY-protocol case: the lookups cannot start before it), then
gets a new greeting. Both servers deliver to a Maildir and run with
smtpd_client_connection_count_limit = 0 (the XCLIENT sessions all come from 127.0.0.1) and
mynetworks = 127.0.0.1/32; the reference Postfix keeps its default process limit (100).
Printed per server and mode: greeting latency (connect to 220) and RCPT latency (RCPT sent
to its reply) p50/p99/max, measured by bench/burstclient.py from the connect() or send()
call to the kernel's receive timestamp of the reply (so the load generator's own waiting for
a CPU is not counted), when the last good session ended, failures, and the server's CPU seconds
during the burst (all its processes), per session too; then the issue-18 targets.
Usage: bench/burst [-n SESSIONS] [--mode plain|xclient|both] [--delay S] [--no-postfix]
                   [--no-mailgate] [--py-spy OUT.svg|OUT.txt] [--set NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
import burstclient  # noqa: E402
from burstclient import Result  # noqa: E402
from dnsbench import DNS_ADDRESS, ZONE, pct  # noqa: E402
from tarpit import raise_nofile  # noqa: E402
from throughput import (  # noqa: E402
    REFERENCE,
    count_files,
    free_port,
    fs_note,
    main_cf,
    proc_cpu,
    serve,
    server_cpu,
)

from support import dns as dns_support  # noqa: E402
from support.loopback import wait_listening  # noqa: E402

RESTRICTIONS = ("reject_unknown_sender_domain, reject_rbl_client bl1.bench.test, "
                "reject_rbl_client bl2.bench.test, reject_rbl_client bl3.bench.test")
SETTINGS = {"mynetworks": "127.0.0.1/32", "smtpd_client_connection_count_limit": "0",
            "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "smtpd_recipient_restrictions": RESTRICTIONS}
GREETING_TARGET, RCPT_TARGET = 100.0, 200.0  # ms, p99 (issue 18)


def address(block: int, i: int) -> str:
    """The i-th client address of a block: 127.block.x.y, never .0 or .255."""
    return f"127.{block}.{i // 254}.{i % 254 + 1}"


def burst(port: int, sessions: int, block: int, xclient: bool, timeout: float) -> Result:
    """All sessions at once: each from its own address, or (xclient) from 127.0.0.1 with
    its address announced by XCLIENT."""
    clients = [address(block, i) for i in range(sessions)]
    bind = ["127.0.0.1"] * sessions if xclient else clients
    return burstclient.run(port, clients, bind, xclient, timeout)


def measure(port: int, args: argparse.Namespace, block: int, xclient: bool,
            cpu_of: Callable[[], float], dns_pid: int) -> Result:
    cpu0, dns0 = cpu_of(), proc_cpu(dns_pid)
    own0 = resource.getrusage(resource.RUSAGE_SELF)
    res = burst(port, args.sessions, block, xclient, args.timeout)
    own1 = resource.getrusage(resource.RUSAGE_SELF)
    res.cpu = cpu_of() - cpu0
    res.dns_cpu = proc_cpu(dns_pid) - dns0
    res.client_cpu = own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime
    return res


def wait_delivered(mail: Path, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while count_files(mail) < count and time.monotonic() < deadline:
        time.sleep(0.1)


def mailgate_source() -> str:
    """Where the server's interpreter finds mailgate (serve() runs ROOT/.venv's python with
    this environment, so PYTHONPATH chooses the code under test)."""
    python = ROOT / ".venv" / "bin" / "python"
    out = subprocess.run([str(python if python.exists() else sys.executable), "-c",
                          "import mailgate; print(mailgate.__file__)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def start_profiler(pid: int, out: str) -> subprocess.Popen[bytes]:
    """py-spy on the master and its workers: only threads holding the GIL (CPU in Python
    and in uvloop, not the fsync thread waiting nor the loop idle in epoll_wait)."""
    fmt = "flamegraph" if out.endswith(".svg") else "raw"
    spy = os.environ.get("PY_SPY", "/tmp/pyspy/bin/py-spy")
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--subprocesses", "--gil",
                             "--nonblocking", "--rate", "200", "--format", fmt, "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        spy.wait(60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def run_mailgate(args: argparse.Namespace, work: Path, dns: dns_support.DnsServer,
                 block: int, xclient: bool) -> Result:
    proc, port = serve(main_cf(work, {**SETTINGS, "resolver_servers": dns.address,
                                      "resolver_hosts_file": "",
                                      "smtpd_max_connections": "20000",
                                      **dict(kv.split("=", 1) for kv in args.set)}))
    spy = None
    try:
        if args.py_spy:
            spy = start_profiler(proc.pid, args.py_spy.replace("MODE", mode_name(xclient)))
            time.sleep(1.0)  # py-spy attaches to the master, then finds the workers
        res = measure(port, args, block, xclient, lambda: server_cpu(proc.pid),
                      dns.proc.pid)
        if spy is not None:
            stop_profiler(spy)
            spy = None
        wait_delivered(work / "mail", res.accepted)
        return res
    finally:
        if spy is not None:
            stop_profiler(spy)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def run_postfix(args: argparse.Namespace, work: Path, dns: dns_support.DnsServer,
                block: int, xclient: bool) -> Result:
    """The reference Postfix with its default process limit; its resolv.conf names the DNS
    server (the reference script's private mount namespace)."""
    work.mkdir(parents=True)
    fragment, resolv = work / "postfix.cf", work / "resolv.conf"
    resolv.write_text(f"nameserver {DNS_ADDRESS}\n")
    fragment.write_text("".join(f"{k} = {v}\n" for k, v in SETTINGS.items()))
    pf = work / "pf"
    subprocess.run([str(REFERENCE), "start", "--dir", str(pf), "--port", str(args.port),
                    "--users", "bench", "--hostname", "mx.bench.test", "--main-cf",
                    str(fragment), "--resolv-conf", str(resolv)],
                   check=True, stdout=subprocess.DEVNULL)
    try:
        master = int((pf / "spool" / "pid" / "master.pid").read_text().strip())
        res = measure(args.port, args, block, xclient, lambda: server_cpu(master),
                      dns.proc.pid)
        wait_delivered(pf / "mail", res.accepted)
        return res
    finally:
        subprocess.run([str(REFERENCE), "stop", "--dir", str(pf)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)


def mode_name(xclient: bool) -> str:
    return "xclient" if xclient else "plain"


def show(name: str, xclient: bool, res: Result, sessions: int) -> None:
    per = f"{res.cpu / sessions * 1000:.2f} ms/session" if res.cpu is not None else "-"
    print(f"{name:8s} {mode_name(xclient):7s} greeting p50 {pct(res.greet, 0.5):6.1f} p99 "
          f"{pct(res.greet, 0.99):6.1f} max {pct(res.greet, 1.0):6.1f} ms | RCPT p50 "
          f"{pct(res.rcpt, 0.5):6.1f} p99 {pct(res.rcpt, 0.99):6.1f} max "
          f"{pct(res.rcpt, 1.0):6.1f} ms | last done {res.wall:5.2f} s, {res.accepted}/{sessions} "
          f"accepted, {sum(res.failures.values())} failed | server CPU {res.cpu or 0:.2f} s "
          f"({per}); client {res.client_cpu:.2f} s, DNS server {res.dns_cpu:.2f} s",
          flush=True)
    for what, count in res.failures.most_common(5):
        print(f"    {count:5d} x {what}")
        if what.startswith("no answer"):
            print("          (connected, then no greeting: a connection the server's full "
                  "listen queue lost; see nstat TcpExtListenOverflows)")


def targets(mode: str, mg: Result, pf: Result | None) -> None:
    greet, rcpt = pct(mg.greet, 0.99), pct(mg.rcpt, 0.99)
    checks = [f"greeting p99 {greet:.0f} < {GREETING_TARGET:.0f} ms: "
              f"{'met' if greet < GREETING_TARGET else 'NOT met'}",
              f"RCPT p99 {rcpt:.0f} < {RCPT_TARGET:.0f} ms: "
              f"{'met' if rcpt < RCPT_TARGET else 'NOT met'}"]
    if pf is not None:
        theirs = pct(pf.rcpt, 0.99)
        checks.append(f"RCPT p99 below Postfix's {theirs:.0f} ms: "
                      f"{'met' if rcpt < theirs else 'NOT met'}")
    else:
        checks.append("RCPT p99 against Postfix: not measured")
    print(f"targets {mode:7s} " + "; ".join(checks), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--sessions", type=int, default=500)
    parser.add_argument("--mode", choices=("plain", "xclient", "both"), default="both")
    parser.add_argument("--delay", type=float, default=0.05, help="DNS answer delay (s)")
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--no-mailgate", action="store_true", help="the reference Postfix only")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="a session not done after this many seconds counts as failed")
    parser.add_argument("--port", type=int, default=2798, help="reference Postfix port")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a main.cf setting for mailgate (e.g. smtpd_processes=2)")
    parser.add_argument("--py-spy", metavar="OUT",
                        help="profile mailgate's processes during each burst with py-spy "
                             "(.svg: flame graph, else raw stacks; MODE in OUT is replaced)")
    args = parser.parse_args()
    if args.sessions > 254 * 256:
        parser.error("at most 65024 sessions (one address each in a 127.B/16 block)")
    raise_nofile()
    modes = [False, True] if args.mode == "both" else [args.mode == "xclient"]
    with tempfile.TemporaryDirectory(prefix="mailgate-bench-burst-") as tmp:
        os.chmod(tmp, 0o711)  # started as root, mailgate works as mail_owner in it
        run_all(args, Path(tmp), modes)
    return 0


def floor(args: argparse.Namespace, block: int) -> None:
    """The load generator's own floor: the same burst against Postfix's smtp-sink, a C
    server that greets at once and checks nothing (no DNS, no queue)."""
    sink = Path("/usr/sbin/smtp-sink")
    if not sink.exists():
        print("floor not measured: /usr/sbin/smtp-sink missing")
        return
    port = free_port()
    proc = subprocess.Popen([str(sink), "-u", "postfix", "-c", f"127.0.0.1:{port}",
                             str(max(args.sessions, 100))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        res = burst(port, args.sessions, block, False, args.timeout)
        print(f"floor    (this load generator against smtp-sink, which greets at once) "
              f"greeting p50 {pct(res.greet, 0.5):6.1f} p99 {pct(res.greet, 0.99):6.1f} ms | "
              f"RCPT p50 {pct(res.rcpt, 0.5):6.1f} p99 {pct(res.rcpt, 0.99):6.1f} ms",
              flush=True)
    finally:
        proc.terminate()
        proc.wait(10)


def postfix_wanted(args: argparse.Namespace) -> bool:
    if args.no_postfix:
        print("reference Postfix not run: --no-postfix")
    elif not REFERENCE.exists() or not Path("/usr/sbin/postfix").exists():
        print(f"reference Postfix not run: {REFERENCE} or /usr/sbin/postfix missing")
    else:
        return True
    return False


def run_all(args: argparse.Namespace, tmp: Path, modes: list[bool]) -> None:
    zones = tmp / "zones"
    zones.mkdir()
    (zones / "bench.zone").write_text(ZONE)
    postfix = postfix_wanted(args)
    try:  # Postfix's resolver needs port 53
        dns = dns_support.start(delay=args.delay, zones=zones, address=DNS_ADDRESS,
                                port=53 if postfix else 0)
    except RuntimeError as exc:
        print(f"reference Postfix not run: the DNS server cannot listen on port 53 ({exc})")
        postfix = False
        dns = dns_support.start(delay=args.delay, zones=zones, address=DNS_ADDRESS)
    print(f"{args.sessions} sessions at once, DNS answers delayed {args.delay * 1000:.0f} ms; "
          f"{RESTRICTIONS}; {os.cpu_count()} cores; mailgate from {mailgate_source()}; "
          f"{fs_note(tmp)}", flush=True)
    block = 1
    try:
        floor(args, 200)
        for xclient in modes:
            mg = None
            if not args.no_mailgate:
                mg = run_mailgate(args, tmp / f"mg-{mode_name(xclient)}", dns, block, xclient)
                show("mailgate", xclient, mg, args.sessions)
            pf = None
            if postfix:
                pf = run_postfix(args, tmp / f"pf-{mode_name(xclient)}", dns, block + 1,
                                 xclient)
                show("postfix", xclient, pf, args.sessions)
            block += 2  # fresh addresses and sender domains: nothing cached between runs
            if mg is not None:
                targets(mode_name(xclient), mg, pf)
    finally:
        dns.stop()


if __name__ == "__main__":
    sys.exit(main())
