"""bench/relay: messages/s end to end, `smtp-source` → server → `smtp-sink`, mailgate and the
reference Postfix relaying to the same sink in the same run, and the ratio.

Each server accepts `-m` messages from `smtp-source -s 10` for a relay domain routed by
transport_maps to `smtp:[127.0.0.1]:SINK`; the time runs until its log shows every message
`status=sent` by its SMTP client (both fsync each message before `250`).
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
import time
from pathlib import Path

from throughput import REFERENCE, free_port, main_cf, serve, server_cpu, smtp_source

DOMAIN = "relay.bench"


def start_sink(port: int) -> subprocess.Popen[bytes]:
    user = ["-u", "postfix"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(["/usr/sbin/smtp-sink", *user, f"127.0.0.1:{port}", "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:  # readiness: the port accepts
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_sent(log: Path, pattern: re.Pattern[str], messages: int, timeout: float = 3600) -> None:
    start = time.monotonic()
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        if len(pattern.findall(text)) >= messages:
            return
        if time.monotonic() - start > timeout:
            raise TimeoutError("relaying did not finish")
        time.sleep(0.2)


def run_mailgate(args: argparse.Namespace, work: Path, sink: int) -> dict[str, float]:
    etc = main_cf(work, {"relay_domains": DOMAIN, "mynetworks": "127.0.0.0/8",
                         "transport_maps": f"inline:{{{DOMAIN}=smtp:[127.0.0.1]:{sink}}}"})
    proc, port = serve(etc)
    try:
        start = time.monotonic()
        smtp_source(port, args.messages, args.sessions, args.size, f"user@{DOMAIN}")
        accepted = time.monotonic() - start
        wait_sent(work / "maillog", re.compile(r"/smtp\[\d+\]: .* status=sent "), args.messages)
        total = time.monotonic() - start
        cpu = server_cpu(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return {"accept_s": accepted, "total_s": total, "cpu_s": cpu}


def run_postfix(args: argparse.Namespace, work: Path, sink: int) -> dict[str, float] | None:
    if args.no_postfix or not REFERENCE.exists() or not Path("/usr/sbin/postfix").exists():
        return None
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    fragment = work.parent / "relay.cf"
    fragment.write_text(f"relay_domains = {DOMAIN}\nmynetworks = 127.0.0.0/8\n"
                        f"transport_maps = inline:{{{DOMAIN}=smtp:[127.0.0.1]:{sink}}}\n")
    subprocess.run([str(REFERENCE), "start", "--dir", str(work), "--port", str(port),
                    "--main-cf", str(fragment)], check=True, stdout=subprocess.DEVNULL)
    try:
        start = time.monotonic()
        smtp_source(port, args.messages, args.sessions, args.size, f"user@{DOMAIN}")
        accepted = time.monotonic() - start
        wait_sent(work / "maillog", re.compile(r"postfix/smtp\[\d+\]: .* status=sent "),
                  args.messages)
        total = time.monotonic() - start
    finally:
        subprocess.run([str(REFERENCE), "stop", "--dir", str(work)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
    return {"accept_s": accepted, "total_s": total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--messages", type=int, default=20000)
    parser.add_argument("-s", "--sessions", type=int, default=10)
    parser.add_argument("-l", "--size", type=int, default=2048)
    parser.add_argument("--no-postfix", action="store_true")
    args = parser.parse_args()
    sink_port = free_port()
    sink = start_sink(sink_port)
    try:
        with tempfile.TemporaryDirectory(prefix="mailgate-relay-") as tmp:
            os.chmod(tmp, 0o711)  # started as root, mailgate works as mail_owner in it
            os.chmod(tmp, 0o755)
            mg = run_mailgate(args, Path(tmp) / "mailgate", sink_port)
            pf = run_postfix(args, Path(tmp) / "postfix", sink_port)
    finally:
        sink.terminate()
        sink.wait(10)
    n = args.messages
    print(f"smtp-source -s {args.sessions} -m {n} -l {args.size} → server → smtp-sink")
    print(f"  mailgate   {n / mg['total_s']:8.1f} msg/s end to end "
          f"(accepted in {mg['accept_s']:.1f} s, relayed by {mg['total_s']:.1f} s; "
          f"server CPU {mg['cpu_s']:.1f} s)")
    if pf is None:
        print("  (reference Postfix not installed: no comparison)")
        return 0
    print(f"  Postfix    {n / pf['total_s']:8.1f} msg/s end to end "
          f"(accepted in {pf['accept_s']:.1f} s, relayed by {pf['total_s']:.1f} s)")
    print(f"  ratio      {pf['total_s'] / mg['total_s']:.2f}x (mailgate / Postfix, messages/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
