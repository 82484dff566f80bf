"""Cluster: mailgate's client state in Redis against the local file, and three nodes against one.

Every node runs the features that read or write the state on every RCPT: `check_greylist`
(delay 1 s; a warm-up retries each triplet until it has been deferred once and then passes,
so the measured mail is accepted and delivered, never greylisted), automatic blocks
(`auto_block_threshold = 10`, the client not exempt) and anvil's rate limits set too high to
trigger. In one run:

1. one node with the local state (`state_database`, no `redis_*`) against one node with
   `redis_servers` naming a private redis-server on loopback: s10 throughput (smtp-source
   -s 10, messages/s accepted) and RCPT latency (a small epoll client, 10 sessions at a
   time, several RCPTs each, from the send() to the kernel's receive timestamp of the reply).
   Targets: Redis throughput >= 0.9x the local one, RCPT p99 within 2 ms of it.
2. three Redis nodes sharing that redis-server against one: the same s10 load (sessions
   4+3+3, one smtp-source per node) and the ratio of the totals. No target: the machine may
   have fewer cores than three nodes want.

Runs alternate (local, Redis, three nodes; then in reverse; ...) and medians are compared.
Every process started is stopped by its PID.
Usage: bench/cluster [-m MESSAGES] [--rcpt-sessions N] [--rcpts N] [--runs N] [--no-three]
                     [--set NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from burstclient import _Session  # noqa: E402  (bench/burst's session state)
from throughput import (  # noqa: E402
    count_files,
    fs_note,
    main_cf,
    median,
    proc_cpu,
    serve,
    server_cpu,
    smtp_source,
    wait_delivered,
)

from support.redisserver import RedisServer  # noqa: E402

SENDER, RCPT = "bench@remote.example", "bench@example.test"  # smtp_source()'s
SIZE = 2048  # bytes a message, as bench/throughput
SESSIONS = 10  # smtp-source -s, and the RCPT client's concurrency
FEATURES = {
    # the client (127.0.0.1) is outside mynetworks: counted by anvil and by automatic blocks
    # (auto_block_exceptions = $mynetworks), and nothing permits it before check_greylist
    "mynetworks": "127.0.0.2/32",
    "smtpd_recipient_restrictions": "reject_unauth_destination, check_greylist",
    "greylist_delay": "1s",  # the least it takes (min 1)
    "auto_block_threshold": "10",
    "smtpd_client_recipient_rate_limit": "1000000",
    "smtpd_client_message_rate_limit": "1000000",
    "smtpd_client_connection_rate_limit": "1000000",
}
THROUGHPUT_TARGET, P99_TARGET_MS = 0.9, 2.0
_TS = struct.Struct("qq")  # struct timespec of SO_TIMESTAMPNS
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


@dataclass
class Node:
    """One `mailgate serve` (master, accept process, workers) in its own directory."""

    work: Path
    proc: subprocess.Popen[str]
    port: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def log_lines(self, pattern: str) -> list[str]:
        try:
            text = (self.work / "maillog").read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if re.search(pattern, line)]


def recipients(count: int) -> list[str]:
    """The RCPT client's recipients: lat0@example.test ... (each its own Maildir)."""
    return [f"lat{i}@example.test" for i in range(count)]


def start_node(work: Path, settings: dict[str, str], rcpts: list[str]) -> Node:
    """A node with FEATURES, `settings` and the mailboxes `rcpts`, once it listens."""
    etc = main_cf(work, {**FEATURES, **settings})
    with open(etc / "vmailbox", "a") as table:
        table.writelines(f"{r} example.test/{r.partition('@')[0]}/\n" for r in rcpts)
    proc, port = serve(etc)
    return Node(work, proc, port)


def _reply(sock: socket.socket, buffer: bytearray) -> bytes:
    """One complete reply (its last line), blocking; b"" when the connection closed."""
    while True:
        end = buffer.find(b"\n")
        if end >= 0:
            line = bytes(buffer[: end + 1])
            del buffer[: end + 1]
            if line[3:4] != b"-":
                return line
            continue
        data = sock.recv(4096)
        if not data:
            return b""
        buffer += data


def warm_greylist(port: int, rcpts: list[str], deferred: set[str],
                  timeout: float = 60.0) -> int:
    """Retry MAIL FROM SENDER with every recipient until check_greylist has deferred each
    one once (`deferred`, shared by the nodes of one state: a 450 is proof that its triplet
    was stored) and then passes them all, greylist_delay later; returns the attempts. A
    pass before the deferral is no proof (a store that failed open lets everyone through),
    nor is a 4xx of the store (`451 4.3.5`): both are tried again. Raises RuntimeError on
    any other refusal or after `timeout`."""
    deadline = time.monotonic() + timeout
    for attempt in range(1, 1000):
        replies: list[str] = []
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            buffer = bytearray()
            for command in (None, b"EHLO warm.bench.test", f"MAIL FROM:<{SENDER}>".encode(),
                            *(f"RCPT TO:<{r}>".encode() for r in rcpts), b"QUIT"):
                if command is not None:
                    sock.sendall(command + b"\r\n")
                replies.append(_reply(sock, buffer).decode("latin-1").strip())
        codes = [reply[:3] for reply in replies]
        if any(code not in ("220", "250", "221", "450", "451") for code in codes):
            raise RuntimeError(f"warm-up refused: {replies}")
        for rcpt, code in zip(rcpts, codes[3:-1], strict=True):
            if code == "450":
                deferred.add(rcpt)
        if all(code == "250" for code in codes[3:-1]) and deferred.issuperset(rcpts):
            return attempt
        if time.monotonic() > deadline:
            raise RuntimeError(f"check_greylist not warm after {attempt} attempts: {replies}")
        time.sleep(0.25)  # greylisting needs the clock to move on (greylist_delay)
    raise RuntimeError("check_greylist not warm")


@dataclass
class Latencies:
    """What the RCPT client saw: RCPT round trips (seconds), messages accepted, failures."""

    rcpt: list[float] = field(default_factory=list)
    accepted: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.rcpt)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _dialogue(i: int, rcpts: list[str]) -> list[tuple[bytes, bytes, str]]:
    """Session i after the greeting: one message to every recipient, RCPTs one at a time."""
    return [(f"EHLO c{i}.bench.test\r\n".encode(), b"250", "EHLO"),
            (f"MAIL FROM:<{SENDER}>\r\n".encode(), b"250", "MAIL"),
            *((f"RCPT TO:<{r}>\r\n".encode(), b"250", "RCPT") for r in rcpts),
            (b"DATA\r\n", b"354", "DATA"),
            (f"Subject: rcpt latency {i}\r\n\r\nbody\r\n.\r\n".encode(), b"250", "end of data"),
            (b"QUIT\r\n", b"221", "QUIT")]


def rcpt_latency(port: int, sessions: int, rcpts: list[str], concurrency: int = SESSIONS,
                 timeout: float = 600.0) -> Latencies:
    """`sessions` sessions, `concurrency` at a time, each sending one message to `rcpts`.
    A RCPT's latency runs from just before its send() to the kernel's receive timestamp of
    the reply (SO_TIMESTAMPNS), so this process waiting for a CPU does not count (as
    bench/burstclient.py measures)."""
    res = Latencies()
    sel = selectors.DefaultSelector()
    started = 0

    def begin() -> None:
        nonlocal started
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        except OSError as exc:
            res.failures[f"connect: {exc}"[:120]] += 1
            started += 1
            return
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, _Session(sock, _dialogue(started, rcpts)))
        started += 1

    def end(sess: _Session, failure: str = "") -> None:
        if failure:
            res.failures[failure[:120]] += 1
        sel.unregister(sess.sock)
        sess.sock.close()
        if started < sessions:
            begin()

    for _ in range(min(concurrency, sessions)):
        begin()
    deadline = time.monotonic() + timeout
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            sess: _Session = key.data
            try:
                data, ancdata, _, _ = sess.sock.recvmsg(65536, socket.CMSG_SPACE(_TS.size))
            except OSError as exc:
                end(sess, f"{type(exc).__name__}: {exc.strerror}")
                continue
            if not data:
                end(sess, "connection closed")
                continue
            stamp = next((_TS.unpack_from(value) for level, kind, value in ancdata
                          if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS), None)
            received = stamp[0] * 1_000_000_000 + stamp[1] if stamp else time.time_ns()
            sess.buffer += data
            line = b""
            while (cut := sess.buffer.find(b"\n")) >= 0:
                line, sess.buffer = sess.buffer[: cut + 1], sess.buffer[cut + 1:]
                if line[3:4] != b"-":
                    break
                line = b""
            if not line:
                continue
            expected, what = (b"220", "greeting") if sess.step < 0 else sess.steps[sess.step][1:]
            if what == "RCPT":
                res.rcpt.append((received - sess.sent_ns) / 1e9)
            if not line.startswith(expected):
                end(sess, f"{what}: {line.decode(errors='replace').strip()}")
                continue
            res.accepted += what == "end of data"
            sess.step += 1
            if sess.step == len(sess.steps):
                end(sess)
                continue
            sess.sent_ns = time.time_ns()
            sess.sock.send(sess.steps[sess.step][0])  # a few dozen bytes: never short
    for key in list(sel.get_map().values()):
        end(key.data, f"no answer within {timeout:.0f} s")
    sel.close()
    return res


def redis_calls(port: int) -> Counter[str]:
    """Commands the redis-server has run, by name (INFO commandstats; a script's own
    commands are counted too, beside its EVALSHA)."""
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return Counter({name: int(calls) for name, calls in
                    re.findall(r"^cmdstat_([\w|]+):calls=(\d+)", out, re.MULTILINE)})


@dataclass
class Measured:
    rate: float  # msg/s accepted
    outages: int  # state backend unavailable: Redis skipped for a second in one worker
    cpu_ms: float  # CPU ms a message: every mailgate process plus the redis-server
    redis_calls: float  # redis commands a message (0 for the local state)
    latency: Latencies | None


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as it goes, larger shares first (10/3: 4 3 3)."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def throughput(nodes: list[Node], messages: int, redis: RedisServer | None) -> tuple[
        float, float, Counter[str]]:
    """smtp-source at -s SESSIONS in all, one process per node, the messages in the same
    shares. Returns msg/s accepted (the messages in the Maildirs over the time until the
    last smtp-source ended), CPU ms a message and the redis commands run."""
    sessions = split(SESSIONS, len(nodes))
    shares = [messages * s // SESSIONS for s in sessions]
    shares[0] += messages - sum(shares)

    def cpu() -> float:
        return (sum(server_cpu(n.proc.pid) for n in nodes)
                + (proc_cpu(redis.proc.pid) if redis and redis.proc else 0.0))

    calls0 = redis_calls(redis.port) if redis else Counter()
    cpu0, start = cpu(), time.monotonic()
    with ThreadPoolExecutor(len(nodes)) as pool:
        runs = [pool.submit(smtp_source, n.port, m, s, SIZE, RCPT)
                for n, m, s in zip(nodes, shares, sessions, strict=True)]
        for run in runs:
            try:
                run.result()
            except subprocess.CalledProcessError as exc:  # its reason went to stderr
                print(f"  smtp-source failed (exit {exc.returncode}): its messages left are "
                      "missing from the rate", flush=True)
    elapsed = time.monotonic() - start
    for node, share in zip(nodes, shares, strict=True):
        try:  # written before 250 (decision 0047): a shortfall is mail refused
            wait_delivered(node.work / "mail", share, timeout=30)
        except TimeoutError:
            pass
    accepted = sum(count_files(n.work / "mail") for n in nodes)
    used = cpu() - cpu0
    calls = redis_calls(redis.port) - calls0 if redis else Counter()
    return accepted / elapsed, 1000 * used / messages, calls


def run_config(name: str, nodes_wanted: int, args: argparse.Namespace, work: Path,
               redis: RedisServer | None, prefix: str) -> Measured:
    """Start the nodes, warm greylisting up, measure, stop them; check the logs."""
    rcpts = recipients(args.rcpts)
    settings = dict(kv.split("=", 1) for kv in args.set)
    if redis:
        settings.update(redis_servers=f"127.0.0.1:{redis.port}", redis_key_prefix=prefix)
    nodes: list[Node] = []
    try:
        for i in range(nodes_wanted):
            nodes.append(start_node(work / f"node{i}", settings, rcpts))
        deferred: set[str] = set()
        warm = [warm_greylist(n.port, [RCPT, *rcpts], deferred) for n in nodes]
        rate, cpu_ms, commands = throughput(nodes, args.messages, redis)
        latency = None
        if nodes_wanted == 1:
            latency = rcpt_latency(nodes[0].port, args.rcpt_sessions, rcpts)
            box = nodes[0].work / "mail" / "example.test" / rcpts[0].partition("@")[0] / "new"
            delivered = len(os.listdir(box)) if box.exists() else 0
            if delivered != latency.accepted or latency.failures:
                print(f"  RCPT client: {latency.accepted} accepted, {delivered} in the "
                      f"Maildir, failures {dict(latency.failures)}", flush=True)
    finally:
        for node in nodes:
            node.stop()
    rejects = Counter(" ".join(m.groups()) for n in nodes for line in n.log_lines("NOQUEUE: reject")
                      if (m := re.search(r"reject: (\S+) from \S+: (\d{3} \S+)", line)))
    deferred_in_warmup = sum(w - 1 for w in warm) * (1 + len(rcpts))
    warnings = [line for n in nodes for line in n.log_lines(r"warning: ")]
    kinds = Counter(line.split("warning: ", 1)[1].split(":", 1)[0] for line in warnings)
    outages = sum("state backend unavailable" in line for line in warnings)
    delivered = sum(count_files(n.work / "mail") for n in nodes)
    calls = sum(commands.values()) / args.messages
    mix = " ".join(f"{name} {n / args.messages:.1f}" for name, n in commands.most_common(6))
    text = (f"{name:12s} accepted {rate:7.1f} msg/s  cpu {cpu_ms:5.2f} ms/msg"
            + (f"  redis {calls:4.1f} cmd/msg" if redis else ""))
    if latency is not None:
        text += (f"  RCPT p50 {1000 * latency.percentile(0.5):6.2f} ms  p99 "
                 f"{1000 * latency.percentile(0.99):6.2f} ms ({len(latency.rcpt)} RCPTs, "
                 f"{latency.accepted} messages)")
    print(text, flush=True)
    print(f"{'':12s} {delivered} of {args.messages} smtp-source messages delivered; rejects "
          f"{sum(rejects.values())} (greylist warm-up {deferred_in_warmup} at most)"
          + "".join(f", {what} {n}" for what, n in rejects.most_common()), flush=True)
    if warnings:
        print(f"{'':12s} warnings: {', '.join(f'{k} {n}' for k, n in kinds.most_common())}; "
              f"state backend unavailable {outages} times (each: one worker without Redis for "
              f"a second, redis_failure_action); first: {warnings[0].split(': ', 1)[-1]}",
              flush=True)
    if mix:
        print(f"{'':12s} redis commands a message: {mix}", flush=True)
    return Measured(rate, outages, cpu_ms, calls, latency)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(results: dict[str, list[Measured]]) -> None:
    """Medians of the runs, the two targets, the three-node ratio."""
    print()
    for name, runs in results.items():
        if not runs:
            continue
        text = (f"median {name:12s} accepted {median([m.rate for m in runs]):7.1f} msg/s  "
                f"cpu {median([m.cpu_ms for m in runs]):5.2f} ms/msg")
        if runs[0].latency is not None:
            text += (f"  RCPT p50 {median([_ms(m, 0.5) for m in runs]):6.2f} ms  "
                     f"p99 {median([_ms(m, 0.99) for m in runs]):6.2f} ms")
        print(text)
    local, redis, three = results["local"], results["redis"], results["three nodes"]
    ratio = median([m.rate for m in redis]) / median([m.rate for m in local])
    print(f"throughput redis/local (medians): {ratio:.2f}x (target >= {THROUGHPUT_TARGET}x) "
          f"{verdict(ratio >= THROUGHPUT_TARGET)}")
    p99 = median([_ms(m, 0.99) for m in redis]) - median([_ms(m, 0.99) for m in local])
    print(f"RCPT p99 redis - local (medians): {p99:+.2f} ms (target <= {P99_TARGET_MS} ms) "
          f"{verdict(p99 <= P99_TARGET_MS)}")
    skipped = sum(m.outages for m in redis + three)
    if skipped:
        print(f"(Redis unavailable {skipped} times in the Redis runs, each leaving one worker "
              "without it for a second: those commands cost no round trip, so the Redis "
              "figures are better than a Redis answering every time would give)")
    if three:
        scale = median([m.rate for m in three]) / median([m.rate for m in redis])
        print(f"three Redis nodes / one Redis node (medians): {scale:.2f}x the s10 throughput "
              f"(no target: {os.cpu_count()} cores for three nodes, the redis-server and the "
              "clients)")


def _ms(measured: Measured, q: float) -> float:
    return 1000 * measured.latency.percentile(q) if measured.latency else 0.0


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--messages", type=int, default=5000,
                        help="smtp-source messages a throughput measurement")
    parser.add_argument("--rcpt-sessions", type=int, default=1000,
                        help="sessions of the RCPT latency client (10 at a time)")
    parser.add_argument("--rcpts", type=int, default=5, help="RCPTs a latency session")
    parser.add_argument("--runs", type=int, default=2,
                        help="alternating runs (local, redis, three; then reversed; ...)")
    parser.add_argument("--no-three", action="store_true", help="skip the three-node part")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a main.cf setting for every node (e.g. redis_timeout=1s)")
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("redis-cli") is None or \
            not Path("/usr/sbin/smtp-source").exists():
        print("redis-server, redis-cli and smtp-source are needed: run scripts/test-setup")
        return 1
    configs = [("local", 1), ("redis", 1)] + ([] if args.no_three else [("three nodes", 3)])
    results: dict[str, list[Measured]] = {"local": [], "redis": [], "three nodes": []}
    print(f"s10 throughput: smtp-source -s {SESSIONS} -m {args.messages} -l {SIZE}; RCPT "
          f"latency: {args.rcpt_sessions} sessions x {args.rcpts} RCPTs, {SESSIONS} at a time; "
          f"{os.cpu_count()} cores; {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mailgate-cluster-") as tmp:
        os.chmod(tmp, 0o711)  # started as root, mailgate works as mail_owner in it
        print(fs_note(Path(tmp)), flush=True)
        redis = RedisServer(binary, Path(tmp) / "redis").start()
        print(f"redis-server pid {redis.proc.pid if redis.proc else '?'} on "
              f"127.0.0.1:{redis.port}", flush=True)
        try:
            for run in range(args.runs):
                print(f"\n-- run {run + 1} ({load()})", flush=True)
                for name, count in configs if run % 2 == 0 else configs[::-1]:
                    tag = name.replace(" ", "-")
                    results[name].append(run_config(
                        name, count, args, Path(tmp) / f"{tag}-{run}",
                        None if name == "local" else redis, f"bench-{run}-{tag}:"))
        finally:
            redis.stop()
    report(results)
    print(f"at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
