"""`mailgate queue`: mailq / postqueue / postsuper for mailgate's queue, working while the
server runs (files are renamed atomically; a flush is a signal to the running server)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from mailgate.errors import QueueError
from mailgate.maillog import MailLog
from mailgate.queue.store import Envelope, QueueStore

SHOWN = (("active", "*"), ("deferred", ""), ("hold", "!"))
PID_FILE = "master.pid"


def entries(store: QueueStore) -> list[tuple[str, str, Envelope, int]]:
    """(queue, id, envelope, size) of every message, oldest first."""
    out = []
    for queue, _ in SHOWN:
        for queue_id in store.list_queue(queue):
            try:
                envelope, content = store.read(queue, queue_id)
            except (OSError, ValueError, QueueError):
                continue  # moved or removed meanwhile
            out.append((queue, queue_id, envelope, len(content)))
    out.sort(key=lambda item: item[2].arrival)
    return out


def list_queue(store: QueueStore, out: TextIO, as_json: bool = False) -> int:
    """Postfix's mailq output (showq_compat.c), or one JSON object per message."""
    items = entries(store)
    if as_json:
        for queue, queue_id, env, size in items:
            out.write(json.dumps({
                "queue_name": queue, "queue_id": queue_id, "arrival_time": int(env.arrival),
                "message_size": size, "forced_expire": False, "sender": env.sender,
                "recipients": [{"address": r.address, "delay_reason": r.reason}
                               if r.reason else {"address": r.address}
                               for r in env.recipients if not r.done]}) + "\n")
        return 0
    if not items:
        out.write("Mail queue is empty\n")
        return 0
    total = 0
    for n, (queue, queue_id, env, size) in enumerate(items):
        if n:
            out.write("\n")
        else:
            out.write(f"{'-Queue ID-':<11} {'--Size--':>7} {'----Arrival Time----':<20} "
                      "-Sender/Recipient-------\n")
        mark = dict(SHOWN)[queue]
        arrival = time.asctime(time.localtime(env.arrival))
        out.write(f"{queue_id + mark:<11} {size:>7} {arrival[:20]:>20} "
                  f"{env.sender or 'MAILER-DAEMON'}\n")
        reason = None
        for rcpt in env.recipients:
            if rcpt.done:
                continue
            if rcpt.reason != reason and (rcpt.reason or reason is not None):
                reason = rcpt.reason
                shown = reason or "reason unavailable"
                out.write(" " * max(76 - len(shown), 0) + f"({shown})\n")
            out.write(f"{'':<11} {'':>7} {'':<20} {rcpt.address}\n")
        total += size
    out.write(f"\n-- {total // 1024} Kbytes in {len(items)} "
              f"Request{'' if len(items) == 1 else 's'}.\n")
    return 0


def _find(store: QueueStore, queue_id: str) -> str | None:
    for queue in ("active", "deferred", "hold"):
        if store.path(queue, queue_id).exists():
            return queue
    return None


def _targets(store: QueueStore, ids: list[str], queues: tuple[str, ...]) -> list[tuple[str, str]]:
    if ids == ["ALL"]:
        return [(q, i) for q in queues for i in store.list_queue(q)]
    out = []
    for queue_id in ids:
        queue = _find(store, queue_id)
        if queue is None or queue not in queues:
            print(f"mailgate queue: warning: {queue_id}: no such message", file=sys.stderr)
            continue
        out.append((queue, queue_id))
    return out


def change(store: QueueStore, log: MailLog, action: str, ids: list[str]) -> int:
    """delete, hold, release, requeue (postsuper -d / -h / -H / -r); logged as postsuper."""
    queues = {"delete": ("active", "deferred", "hold"), "hold": ("active", "deferred"),
              "release": ("hold",), "requeue": ("active", "deferred", "hold")}[action]
    done = 0
    for queue, queue_id in _targets(store, ids, queues):
        try:
            if action == "delete":
                store.remove(queue, queue_id)
                log.log("postsuper", f"{queue_id}: removed")
            elif action == "hold":
                store.move(queue_id, queue, "hold")
                log.log("postsuper", f"{queue_id}: placed on hold")
            else:  # release and requeue: deferred, due now
                envelope, content = store.read(queue, queue_id)
                envelope.next_attempt = 0.0
                store.rewrite(queue, envelope, content)
                if queue != "deferred":
                    store.move(queue_id, queue, "deferred")
                log.log("postsuper", f"{queue_id}: "
                        + ("released from hold" if action == "release" else "requeued"))
        except (OSError, QueueError):
            continue  # delivered or moved meanwhile
        done += 1
    verb = {"delete": "Deleted", "hold": "Placed on hold", "release": "Released from hold",
            "requeue": "Requeued"}[action]
    print(f"mailgate queue: {verb}: {done} message{'' if done == 1 else 's'}",
          file=sys.stderr)
    if action in ("release", "requeue") and done:
        flush(store)
    return 0


def signal_server(root: Path, signum: int) -> bool:
    """Send `signum` to the running server's master (its pid file is in the queue root)."""
    try:
        os.kill(int((root / PID_FILE).read_text().strip()), signum)
    except (OSError, ValueError):
        return False
    return True


def flush(store: QueueStore) -> int:
    """Ask the running server to deliver the deferred queue now (postqueue -f)."""
    if signal_server(store.root, signal.SIGUSR2):
        return 0
    print("mailgate queue: warning: no running server (deferred mail is delivered when "
          "it starts)", file=sys.stderr)
    return 1


def write_pid(root: Path) -> None:
    (root / PID_FILE).write_text(f"{os.getpid()}\n")
