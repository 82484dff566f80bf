"""Throughput: Postfix's smtp-source against mailgate and a reference Postfix, Maildir delivery.

Both servers fsync a message before `250` and deliver it to a Maildir. For each: messages/s
accepted (the smtp-source run) and delivered (until the last Maildir file), CPU seconds of the
whole server (all its processes), peak RSS (sum over its processes), and RSS samples over the
run (memory must stay flat).
Runs alternate (mailgate, Postfix, Postfix, mailgate, ...) and the medians are compared.
With --tls, both servers get the same RSA certificate (smtpd_tls_security_level = may) and
bench/tlsclient.py replaces smtp-source: STARTTLS and a full handshake on every session, one
message per session (smtp-source cannot start TLS).
Usage: bench/throughput [-m MESSAGES] [-s SESSIONS[,SESSIONS...]] [-l BYTES] [--runs N]
                        [--no-postfix] [--metrics] [--tls] [--set NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("MAILGATE_SHARED", ROOT.parent / "shared"))
REFERENCE = SHARED / "postfix" / "reference-postfix.sh"
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int, children: bool = False) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime (waited-for children)
    return ticks / TICK


def proc_rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


class Sampler(threading.Thread):
    """Samples the summed RSS of a process tree every 0.25 s."""

    def __init__(self, root_pid: int, tree: bool) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.tree = root_pid, tree
        self.samples: list[tuple[float, int]] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop_flag.wait(0.25):
            pids = [self.root_pid] + (descendants(self.root_pid) if self.tree else [])
            self.samples.append((time.monotonic() - start, sum(proc_rss_kb(p) for p in pids)))

    def finish(self) -> list[tuple[float, int]]:
        self.stop_flag.set()
        self.join()
        return self.samples


def free_port() -> int:
    """A free loopback port for a server that needs one named in its configuration."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main_cf(work: Path, settings: dict[str, str]) -> Path:
    """A benchmark configuration: example.test with the mailbox bench@, everything under
    `work`, any free port; `settings` added. Returns the configuration directory."""
    etc = work / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "vmailbox").write_text("bench@example.test example.test/bench/\n")
    text = ("myhostname = mx.bench.test\nmydestination = localhost\n"
            "virtual_mailbox_domains = example.test\n"
            f"virtual_mailbox_maps = texthash:{etc / 'vmailbox'}\n"
            f"mailgate_home = {work / 'data'}\nvirtual_mailbox_base = {work / 'mail'}\n"
            f"maillog_file = {work / 'maillog'}\nsmtpd_listen = 127.0.0.1:0\n")
    text += "".join(f"{k} = {v}\n" for k, v in settings.items())
    (etc / "main.cf").write_text(text)
    return etc


def serve(etc: Path) -> tuple[subprocess.Popen[str], int]:
    """Start `mailgate serve`; returns the process and its port once it listens."""
    python = ROOT / ".venv" / "bin" / "python"
    proc = subprocess.Popen([str(python if python.exists() else sys.executable), "-m",
                             "mailgate.cli", "serve", "-c", str(etc)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    m = re.search(r":(\d+)$", proc.stdout.readline().strip())
    assert m, "mailgate did not start"
    return proc, int(m.group(1))


def server_cpu(pid: int) -> float:
    """CPU seconds of a server and all its processes."""
    return proc_cpu(pid, children=True) + sum(proc_cpu(p) for p in descendants(pid))


def count_files(mail: Path) -> int:
    """Messages in the benchmark Maildir (both servers use MAIL/example.test/bench/)."""
    try:
        return len(os.listdir(mail / "example.test" / "bench" / "new"))
    except FileNotFoundError:
        return 0


def tls_settings(work: Path) -> dict[str, str]:
    """A self-signed RSA-2048 certificate made with openssl, as main.cf lines for both."""
    work.mkdir(parents=True, exist_ok=True)
    cert, key = work / "cert.pem", work / "key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=mx.bench.test"],
                       check=True, capture_output=True, timeout=60)
    return {"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key)}


def smtp_source(port: int, messages: int, sessions: int, size: int, rcpt: str,
                tls: bool = False) -> float:
    start = time.monotonic()
    if tls:
        subprocess.run([sys.executable, str(HERE / "tlsclient.py"), str(port), "-m",
                        str(messages), "-s", str(sessions), "-l", str(size), "-t", rcpt],
                       check=True, timeout=3600, stdout=subprocess.DEVNULL)
        return time.monotonic() - start
    subprocess.run(["/usr/sbin/smtp-source", "-s", str(sessions), "-m", str(messages), "-l",
                    str(size), "-f", "bench@remote.example", "-t", rcpt, f"127.0.0.1:{port}"],
                   check=True, timeout=3600)
    return time.monotonic() - start


def wait_delivered(mail: Path, messages: int, timeout: float = 3600) -> float:
    start = time.monotonic()
    while count_files(mail) < messages:
        if time.monotonic() - start > timeout:
            raise TimeoutError("deliveries did not finish")
        time.sleep(0.1)
    return time.monotonic() - start


def run_mailgate(args: argparse.Namespace, work: Path) -> dict[str, object]:
    settings = {"mynetworks": "127.0.0.0/8", **dict(kv.split("=", 1) for kv in args.set)}
    if args.tls:
        settings.update(tls_settings(work.parent / "tls"))
    if args.metrics:
        settings["metrics_listen"] = "127.0.0.1:0"
    proc, port = serve(main_cf(work, settings))
    sampler = Sampler(proc.pid, tree=True)  # the master and its smtpd workers
    sampler.start()
    try:
        accept = smtp_source(port, args.messages, args.sessions, args.size,
                             "bench@example.test", args.tls)
        deliver = wait_delivered(work / "mail", args.messages)
        cpu = server_cpu(proc.pid)
    finally:
        samples = sampler.finish()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    peak = max((kb for _, kb in samples), default=0)
    return {"accept_s": accept, "total_s": accept + deliver, "cpu_s": cpu, "peak_kb": peak,
            "samples": samples}


def run_postfix(args: argparse.Namespace, work: Path) -> dict[str, object] | None:
    if not REFERENCE.exists() or not Path("/usr/sbin/postfix").exists():
        return None
    port = args.port
    extra = []
    if args.tls:
        fragment = work.parent / f"{work.name}.cf"
        fragment.write_text("".join(f"{k} = {v}\n"
                                    for k, v in tls_settings(work.parent / "tls").items()))
        extra = ["--main-cf", str(fragment)]
    subprocess.run([str(REFERENCE), "start", "--dir", str(work), "--port", str(port),
                    "--users", "bench", "--hostname", "mx.bench.test", *extra], check=True,
                   stdout=subprocess.DEVNULL)
    master = int((work / "spool" / "pid" / "master.pid").read_text().strip())
    sampler = Sampler(master, tree=True)
    sampler.start()
    try:
        cpu0 = proc_cpu(master, children=True) + sum(proc_cpu(p) for p in descendants(master))
        accept = smtp_source(port, args.messages, args.sessions, args.size,
                             "bench@example.test", args.tls)
        deliver = wait_delivered(work / "mail", args.messages)
        cpu = (proc_cpu(master, children=True) + sum(proc_cpu(p) for p in descendants(master))
               - cpu0)
    finally:
        samples = sampler.finish()
        subprocess.run([str(REFERENCE), "stop", "--dir", str(work)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
    peak = max((kb for _, kb in samples), default=0)
    return {"accept_s": accept, "total_s": accept + deliver, "cpu_s": cpu, "peak_kb": peak,
            "samples": samples}


def show(name: str, result: dict[str, object], messages: int) -> None:
    accept, total = float(result["accept_s"]), float(result["total_s"])  # type: ignore[arg-type]
    samples = result["samples"]
    assert isinstance(samples, list)
    quarters = [samples[int(len(samples) * q)][1] // 1024 for q in (0.25, 0.5, 0.75)
                if samples] + ([samples[-1][1] // 1024] if samples else [])
    cpu = float(result["cpu_s"])  # type: ignore[arg-type]
    print(f"{name:9s} accepted {messages / accept:8.1f} msg/s  delivered {messages / total:8.1f} "
          f"msg/s  cpu {cpu:7.1f} s = {1000 * cpu / messages:5.2f} ms/msg  peak RSS "
          f"{int(result['peak_kb']) // 1024:5d} MB  RSS at 25/50/75/100%: "  # type: ignore[call-overload]
          f"{'/'.join(str(q) for q in quarters)} MB", flush=True)


def create_cost(directory: Path, files: int = 300) -> float:
    """CPU µs to create one empty file in `directory` now. On a journal-less ext4 (this
    machine's) an inode allocation scans past every inode freed in the last minute or more,
    so a benchmark that starts right after a large deletion (another benchmark's clean-up)
    pays up to a millisecond per file for a while: both servers do, but it swamps the
    figures. Printed with the results so that such a run can be recognised."""
    probe = directory / "create-probe"
    probe.mkdir()
    start = time.process_time()
    for i in range(files):
        os.close(os.open(probe / str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    cost = (time.process_time() - start) / files * 1e6
    for i in range(files):
        os.unlink(probe / str(i))
    probe.rmdir()
    return cost


def fs_note(directory: Path) -> str:
    cost = create_cost(directory)
    quiet = "quiet" if cost < 60 else "BUSY with recent deletions: figures will be low and noisy"
    return f"file creation {cost:.0f} µs CPU per file ({quiet})"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def compare(args: argparse.Namespace, sessions: int, tmp: Path) -> None:
    """`args.runs` alternating runs of both servers at one session count; the medians."""
    args.sessions = sessions
    print(f"\n-- smtp-source -s {sessions} -m {args.messages} -l {args.size}, "
          f"{args.runs} alternating run(s)", flush=True)
    rates: dict[str, list[float]] = {"mailgate": [], "postfix": []}
    cpus: dict[str, list[float]] = {"mailgate": [], "postfix": []}
    for run in range(args.runs):
        for name in ("mailgate", "postfix") if run % 2 == 0 else ("postfix", "mailgate"):
            work = tmp / f"{name}-s{sessions}-{run}"
            if name == "mailgate":
                result: dict[str, object] | None = run_mailgate(args, work)
            else:
                result = None if args.no_postfix else run_postfix(args, work)
            if result is None:
                continue
            show(f"{name}", result, args.messages)
            rates[name].append(args.messages / float(result["accept_s"]))  # type: ignore[arg-type]
            cpus[name].append(1000 * float(result["cpu_s"]) / args.messages)  # type: ignore[arg-type]
    for name in rates:
        if rates[name]:
            print(f"median {name:9s} accepted {median(rates[name]):8.1f} msg/s  "
                  f"cpu {median(cpus[name]):5.2f} ms/msg")
    if rates["postfix"]:
        ratio = median(rates["mailgate"]) / median(rates["postfix"])
        cpu_ratio = median(cpus["mailgate"]) / median(cpus["postfix"])
        target = "(target >= 1.0x with --tls)" if args.tls else "(target >= 1.5x)"
        print(f"ratio mailgate/postfix (medians): accepted {ratio:.2f}x {target}  "
              f"cpu per message {cpu_ratio:.2f}x (target <= 0.6x)", flush=True)
    elif not args.no_postfix:
        print("reference Postfix not installed: mailgate only")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-m", "--messages", type=int, default=20000)
    parser.add_argument("-s", "--sessions", default="10",
                        help="smtp-source -s; a comma list runs each (e.g. 10,1,50)")
    parser.add_argument("-l", "--size", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=3,
                        help="alternating runs per session count (medians are compared)")
    parser.add_argument("--port", type=int, default=2798, help="reference Postfix port")
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--metrics", action="store_true", help="mailgate with metrics_listen")
    parser.add_argument("--tls", action="store_true",
                        help="STARTTLS on every session (bench/tlsclient.py), same certificate")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a main.cf setting for mailgate (e.g. smtpd_direct_delivery=no)")
    args = parser.parse_args()
    print(f"Maildir delivery, fsync before 250; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="mailgate-bench-") as tmp:
        os.chmod(tmp, 0o711)  # started as root, mailgate works as mail_owner in it
        print(fs_note(Path(tmp)), flush=True)
        for sessions in (int(x) for x in str(args.sessions).split(",")):
            compare(args, sessions, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
