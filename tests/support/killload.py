"""The kill storm's senders and their accounting: which message got `250`, which never did.

Every delivery item (one recipient of one message) is identified by (sender, recipient):
each sender address is used by one smtp-source run or one Python client message only, and
recipients carry a number (`smtp-source -N` prepends one; the Python client writes its own).
smtp-source runs with `-v -s 1`, so its log is one dialogue in order and tells, message by
message, whether the reply to the final dot was `250`, another code, or never came.
"""

from __future__ import annotations

import contextlib
import smtplib
import subprocess
import threading
import time
from dataclasses import dataclass, field
from enum import Enum


class Outcome(Enum):
    """What the client saw after sending a message's text."""

    ACKED = "acked"  # 250 to the final dot: the server owns it
    REFUSED = "refused"  # another reply: not accepted
    DROPPED = "dropped"  # no reply (connection lost): may or may not be delivered


@dataclass
class Ledger:
    """The senders' record: (sender, recipient) → outcome, shared by all sender threads."""

    items: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    messages: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, sender: str, rcpts: list[str], outcome: Outcome) -> None:
        with self.lock:
            self.messages[outcome] += 1
            for rcpt in rcpts:
                self.items[(sender, rcpt.lower())] = outcome


class SmtpSourceParser:
    """Reads `smtp-source -v -s 1` log lines and records each message's outcome."""

    def __init__(self, ledger: Ledger, sender: str) -> None:
        self.ledger = ledger
        self.sender = sender
        self.rcpts: list[str] = []
        self.data_sent = False

    def line(self, text: str) -> None:
        _, _, text = text.partition(": ")
        if text.startswith("MAIL FROM:"):
            self.rcpts, self.data_sent = [], False
        elif text.startswith("RCPT TO:<"):
            self.rcpts.append(text[len("RCPT TO:<"):].rstrip(">"))
        elif text == "." and self.rcpts:
            self.data_sent = True
        elif text.startswith("<<< ") and self.data_sent:
            outcome = Outcome.ACKED if text[4:7] == "250" else Outcome.REFUSED
            self.ledger.record(self.sender, self.rcpts, outcome)
            self.rcpts, self.data_sent = [], False

    def end(self) -> None:
        """The run ended: a message whose text was sent without a reply was dropped."""
        if self.data_sent:
            self.ledger.record(self.sender, self.rcpts, Outcome.DROPPED)
        self.rcpts, self.data_sent = [], False


@dataclass
class Senders:
    """smtp-source loops and a Python client loop, until `stop` is set."""

    port: int
    ledger: Ledger
    targets: tuple[str, ...]  # recipient addresses; numbers are prepended
    smtp_source: str = "/usr/sbin/smtp-source"
    loops: int = 2
    batch: int = 10  # messages per smtp-source run (each run has its own sender address)
    size: int = 2000
    max_messages: int = 0  # 0: until stopped
    pause: float = 0.0  # seconds after each smtp-source run and each Python client message
    stop: threading.Event = field(default_factory=threading.Event)
    runs: int = 0
    _threads: list[threading.Thread] = field(default_factory=list)
    _procs: dict[int, subprocess.Popen[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for n in range(self.loops):
            self._threads.append(threading.Thread(target=self._source_loop, args=(n,),
                                                  daemon=True))
        self._threads.append(threading.Thread(target=self._client_loop, daemon=True))
        for thread in self._threads:
            thread.start()

    def finish(self) -> None:
        """Stop sending: end running smtp-source processes (by PID) and join the threads."""
        self.stop.set()
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for thread in self._threads:
            thread.join(30)

    def _budget(self) -> bool:
        if self.stop.is_set():
            return False
        if self.max_messages:
            with self.ledger.lock:
                if sum(self.ledger.messages.values()) >= self.max_messages:
                    return False
        return True

    def _next_run(self) -> int:
        with self._lock:
            self.runs += 1
            return self.runs

    def _source_loop(self, n: int) -> None:
        while self._budget():
            run = self._next_run()
            sender = f"src{run}@source.test"
            target = self.targets[run % len(self.targets)]
            started = time.monotonic()
            self._source_run(sender, target)
            if time.monotonic() - started < 0.2:  # refused at once (the master is down)
                self.stop.wait(0.1)
            self.stop.wait(self.pause)

    def _source_run(self, sender: str, target: str) -> None:
        cmd = [self.smtp_source, "-v", "-s", "1", "-N", "-m", str(self.batch),
               "-l", str(self.size), "-f", sender, "-t", target, f"127.0.0.1:{self.port}"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, errors="replace")
        with self._lock:
            self._procs[proc.pid] = proc
        parser = SmtpSourceParser(self.ledger, sender)
        try:
            assert proc.stderr is not None
            for text in proc.stderr:
                parser.line(text.rstrip("\n"))
        finally:
            proc.wait()
            parser.end()
            with self._lock:
                self._procs.pop(proc.pid, None)
            if proc.stderr is not None:
                proc.stderr.close()

    def _client_loop(self) -> None:
        """Messages for every target at once (one Maildir and one relay recipient), each
        with a numbered X-Token header: the mixed-recipient path of the queue manager."""
        number = 0
        while self._budget():
            number += 1
            sender = f"py{number}@client.test"
            rcpts = [f"{number}{t}" for t in self.targets]
            text = (f"From: <{sender}>\r\nTo: <{rcpts[0]}>\r\nSubject: killstorm {number}\r\n"
                    f"Message-ID: <py{number}@client.test>\r\nX-Token: py{number}\r\n\r\n"
                    f"killstorm message {number}\r\n")
            if not self._client_send(sender, rcpts, text):
                self.stop.wait(0.1)
            self.stop.wait(self.pause)

    def _client_send(self, sender: str, rcpts: list[str], text: str) -> bool:
        data_sent = acked = False
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
                client.ehlo("client.test")
                client.mail(sender)
                for rcpt in rcpts:
                    code, reply = client.rcpt(rcpt)
                    if code != 250:
                        raise smtplib.SMTPRecipientsRefused({rcpt: (code, reply)})
                data_sent = True
                client.data(text.encode())  # raises SMTPDataError unless 354 … 250
                self.ledger.record(sender, rcpts, Outcome.ACKED)
                acked = True
        except smtplib.SMTPDataError:
            self.ledger.record(sender, rcpts, Outcome.REFUSED)
        except (OSError, smtplib.SMTPException):
            if data_sent and not acked:  # a failed QUIT after the 250 changes nothing
                self.ledger.record(sender, rcpts, Outcome.DROPPED)
        return acked
