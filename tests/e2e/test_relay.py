"""Relay end to end: mailgate delivering over SMTP to Postfix's smtp-sink (accepting, and
answering 4xx / 5xx at chosen commands) and to a receiver that never answers; deferral,
retry by `mailgate queue flush`, bounces (parsed with the email package), queue commands,
and kill -9 during a delivery."""

from __future__ import annotations

import email
import json
import os
import pwd
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path

import pytest

from conftest import Server, free_port, port_accepts, require, wait_until
from support.loopback import LoopbackServer

RELAY = "relay.test"


class Sink:
    """smtp-sink on a loopback port; `-d` keeps each received message as a file."""

    def __init__(self, root: Path, *options: str, port: int = 0) -> None:
        self.root = root
        # smtp-sink drops privileges (-u) before writing: a directory in /tmp it can reach
        # (pytest's own directories are private to root)
        self.dump = Path(tempfile.mkdtemp(prefix="mailgate-sink-"))
        self.dump.chmod(0o777)
        self.port = port or free_port()
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sink:
        self.proc = subprocess.Popen(
            [require("smtp-sink"), *(["-u", "postfix"] if os.geteuid() == 0 else []),
             "-d", f"{self.dump}/%M.", *self.options,
             f"127.0.0.1:{self.port}", "100"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        # smtp-sink prints no readiness line: its port accepts (or it has died: say why)
        wait_until(lambda: port_accepts(self.port) or self.proc.poll() is not None)
        if self.proc.poll() is not None:
            raise RuntimeError(f"smtp-sink on port {self.port} exited with status "
                               f"{self.proc.returncode}")
        return self

    def messages(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.dump.iterdir()) if p.is_file()]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def remove(self) -> None:
        shutil.rmtree(self.dump, ignore_errors=True)


class Silent(LoopbackServer):
    """Accepts connections and never says a word (a hung receiver)."""


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[Callable[..., Sink]]:
    started: list[Sink] = []

    def make(*options: str, port: int = 0) -> Sink:
        sink = Sink(tmp_path / f"sink{len(started)}", *options, port=port).start()
        started.append(sink)
        return sink

    yield make
    for sink in started:
        sink.stop()
        sink.remove()


def relay_server(server_factory, port: int, **extra: str) -> Server:  # type: ignore[no-untyped-def]
    return server_factory(relay_domains=RELAY,  # type: ignore[no-any-return]
                          transport_maps=f"inline:{{{RELAY}=smtp:[127.0.0.1]:{port}}}",
                          minimal_backoff_time="1s", queue_run_delay="3600s",
                          **extra).start()


def send(server: Server, recipients: list[str], sender: str = "alice@example.test",
         body: str = "Subject: relay test\r\nMessage-ID: <t1@example.test>\r\n\r\nhello\r\n"
         ) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.sendmail(sender, recipients, body.encode())


def queue(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgate.cli", "queue", "-c",
                           str(server.root / "etc"), *args], capture_output=True, text=True,
                          timeout=60)


def delivery_lines(server: Server, program: str = "smtp") -> list[str]:
    return [x.split(": ", 1)[1] for x in server.log() if x.startswith(program + ": ")]


def test_relay_to_smtp_sink(server_factory, sinks) -> None:  # type: ignore[no-untyped-def]
    sink = sinks()
    server = relay_server(server_factory, sink.port)
    send(server, [f"one@{RELAY}", f"two@{RELAY}"])
    server.wait_log(r"^smtp: .* status=sent ", count=2)
    server.wait_log(r"^qmgr: [0-9A-F]+: removed")
    lines = delivery_lines(server)
    assert all(f"relay=127.0.0.1[127.0.0.1]:{sink.port}, delay=" in x and ", dsn=2.0.0, "
               "status=sent (250 2.0.0 Ok)" in x for x in lines)
    assert [line.split(", ")[0].split(": ")[1] for line in lines] == \
        [f"to=<one@{RELAY}>", f"to=<two@{RELAY}>"]
    messages = sink.messages()
    assert len(messages) == 1  # both recipients in one transaction
    assert b"Subject: relay test" in messages[0] and b"hello" in messages[0]


def test_deferral_queue_listing_and_flush(server_factory, sinks) -> None:  # type: ignore[no-untyped-def]
    failing = sinks("-r", "rcpt")  # every RCPT answered 4xx
    server = relay_server(server_factory, failing.port)
    send(server, [f"later@{RELAY}"])
    line = server.wait_log(r"^smtp: .* status=deferred ")[0]
    assert f"relay=127.0.0.1[127.0.0.1]:{failing.port}" in line
    assert "(host 127.0.0.1[127.0.0.1] said: 4" in line and "(in reply to RCPT TO command))" in line
    wait_until(lambda: "(host 127.0.0.1" in queue(server, "list").stdout)
    listing = queue(server, "list").stdout.splitlines()
    assert listing[0].startswith("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient")
    assert listing[1].split()[-1] == "alice@example.test"
    assert listing[3].strip() == f"later@{RELAY}" and listing[-1] == "-- 0 Kbytes in 1 Request."
    entry = json.loads(queue(server, "list", "--json").stdout)
    assert entry["queue_name"] == "deferred" and entry["recipients"][0]["delay_reason"]
    failing.stop()
    good = sinks(port=failing.port)  # the same next hop now accepts
    assert queue(server, "flush").returncode == 0
    server.wait_log(r"^smtp: .* status=sent ")
    wait_until(lambda: queue(server, "list").stdout == "Mail queue is empty\n")
    assert len(good.messages()) == 1


def _dsn(server: Server, user: str = "alice") -> Message:
    wait_until(lambda: bool(server.maildir_files(user)))
    return email.message_from_bytes(server.maildir_files(user)[0].read_bytes())


def test_permanent_failure_bounces_to_sender(server_factory, sinks) -> None:  # type: ignore[no-untyped-def]
    sink = sinks("-f", "rcpt")  # every RCPT answered 5xx
    server = relay_server(server_factory, sink.port)
    send(server, [f"nobody@{RELAY}"])
    line = server.wait_log(r"^smtp: .* status=bounced ")[0]
    assert "dsn=5." in line and "(in reply to RCPT TO command))" in line
    notice = server.wait_log(r"^bounce: [0-9A-F]+: sender non-delivery notification: ")[0]
    dsn = _dsn(server)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn["Subject"] == "Undelivered Mail Returned to Sender"
    assert dsn["From"].startswith("MAILER-DAEMON@")
    parts = dsn.get_payload()
    assert isinstance(parts, list) and len(parts) == 3
    assert f"<nobody@{RELAY}>: host 127.0.0.1[127.0.0.1] said: 5" in parts[0].get_payload()
    status = parts[1].get_payload()
    assert parts[1].get_content_type() == "message/delivery-status"
    fields = {k: v for block in status for k, v in block.items()}
    assert fields["Final-Recipient"] == f"rfc822; nobody@{RELAY}"
    assert fields["Action"] == "failed" and fields["Status"].startswith("5.")
    original = parts[2].get_payload()[0]
    assert original["Subject"] == "relay test" and original["Message-ID"] == "<t1@example.test>"
    qid = notice.split(": ")[-1]
    server.wait_log(rf"^virtual: {qid}: to=<alice@example.test>, .* status=sent ")


def test_soft_bounce_defers_instead(server_factory, sinks) -> None:  # type: ignore[no-untyped-def]
    sink = sinks("-f", "rcpt")
    server = relay_server(server_factory, sink.port, soft_bounce="yes")
    send(server, [f"nobody@{RELAY}"])
    line = server.wait_log(r"^smtp: .* status=deferred ")[0]
    assert "dsn=4." in line and " said: 5" in line  # the reply as given, the status soft
    assert not [x for x in server.log() if "non-delivery notification" in x]


def test_bounce_of_a_bounce_goes_to_postmaster(server_factory, sinks) -> None:  # type: ignore[no-untyped-def]
    sink = sinks("-f", "rcpt")
    server = relay_server(server_factory, sink.port,
                          **{"2bounce_notice_recipient": "postmaster@example.test"})
    send(server, [f"nobody@{RELAY}"], sender="")
    server.wait_log(r"^bounce: [0-9A-F]+: postmaster non-delivery notification: ")
    notice = _dsn(server, "postmaster")
    assert notice["Subject"] == "Postmaster Copy: Undelivered Mail"


def test_hung_receiver_is_deferred(server_factory) -> None:  # type: ignore[no-untyped-def]
    silent = Silent()
    try:
        server = relay_server(server_factory, silent.port, smtp_helo_timeout="2s")
        send(server, [f"slow@{RELAY}"])
        line = server.wait_log(r"^smtp: .* status=deferred ")[0]
        assert (f"(conversation with 127.0.0.1[127.0.0.1]:{silent.port} timed out while "
                "receiving the initial server greeting)") in line or \
            "timed out while receiving the initial server greeting" in line
    finally:
        silent.close()


def test_hold_release_delete(server_factory, sinks) -> None:  # type: ignore[no-untyped-def]
    failing = sinks("-r", "rcpt")
    server = relay_server(server_factory, failing.port)
    send(server, [f"a@{RELAY}"])
    send(server, [f"b@{RELAY}"])
    server.wait_log(r"^smtp: .* status=deferred ", count=2)
    wait_until(lambda: len(json_entries(server)) == 2 and
               all(e["queue_name"] == "deferred" for e in json_entries(server)))
    first, second = (e["queue_id"] for e in json_entries(server))
    assert queue(server, "hold", first).returncode == 0
    assert queue(server, "list").stdout.splitlines()[1].startswith(first + "!")
    assert queue(server, "delete", second).returncode == 0
    assert [e["queue_id"] for e in json_entries(server)] == [first]
    assert queue(server, "release", first).returncode == 0
    server.wait_log(rf"^postsuper: {first}: released from hold")
    server.wait_log(rf"^postsuper: {second}: removed")
    assert queue(server, "delete", "ALL").returncode == 0
    wait_until(lambda: queue(server, "list").stdout == "Mail queue is empty\n")


def json_entries(server: Server) -> list[dict[str, object]]:
    return [json.loads(x) for x in queue(server, "list", "--json").stdout.splitlines()]


@pytest.fixture
def dovecot_lmtp() -> Iterator[tuple[int, Path]]:
    """Dovecot's LMTP server delivering to Maildirs under a directory of its own."""
    binary = require("dovecot")
    if not Path("/usr/lib/dovecot/lmtp").exists():
        require("dovecot-lmtpd-is-not-installed")  # skips, or fails in CI
    nobody = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="mailgate-lmtp-"))
    top.chmod(0o755)
    base = top / "mail"
    base.mkdir()
    base.chmod(0o777)  # Dovecot delivers as nobody
    root = top / "dovecot"
    root.mkdir()
    port = free_port()
    conf = root / "dovecot.conf"
    conf.write_text(f"""\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:{base}/%d/%n
first_valid_uid = {nobody.pw_uid}
passdb {{
  driver = static
  args = password=secret
}}
userdb {{
  driver = static
  args = uid={nobody.pw_uid} gid={nobody.pw_gid} home={base}/%d/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0600
  }}
}}
""")
    subprocess.run([binary, "-c", str(conf)], check=True, timeout=30,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: port_accepts(port))  # readiness: the LMTP port accepts
    yield port, base
    pid = int((root / "run" / "master.pid").read_text().strip())
    os.kill(pid, signal.SIGTERM)
    shutil.rmtree(top, ignore_errors=True)


def test_lmtp_delivery_to_dovecot(server_factory, dovecot_lmtp) -> None:  # type: ignore[no-untyped-def]
    port, base = dovecot_lmtp
    server = server_factory(relay_domains="store.test",
                            transport_maps=f"inline:{{store.test=lmtp:inet:127.0.0.1:{port}}}"
                            ).start()
    send(server, ["carol@store.test", "dave@store.test"])
    lines = server.wait_log(r"^lmtp: .* status=sent ", count=2)
    assert all(f"relay=127.0.0.1[127.0.0.1]:{port}, " in x and "dsn=2.0.0" in x
               for x in lines)
    for user in ("carol", "dave"):
        new = base / "store.test" / user / "new"
        wait_until(lambda new=new: new.exists() and any(new.iterdir()))  # type: ignore[misc]
        message = email.message_from_bytes(next(new.iterdir()).read_bytes())
        assert message["Subject"] == "relay test"


class HangsAfterData(LoopbackServer):
    """Takes a whole message, then never answers the final dot (the receiver dies with it)."""

    def __init__(self) -> None:
        self.got_message = threading.Event()
        self.messages = 0
        super().__init__()

    def session(self, conn: socket.socket) -> None:
        conn.sendall(b"220 hang.test ESMTP\r\n")
        data = b""
        while not data.endswith(b"\r\n.\r\n"):
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
            for line in chunk.split(b"\r\n"):
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO", b"MAIL", b"RCPT", b"RSET"):
                    conn.sendall(b"250 ok\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
        self.messages += 1
        self.got_message.set()


def test_kill9_during_delivery_loses_nothing(server_factory, sinks) -> None:  # type: ignore[no-untyped-def]
    """At-least-once: the next hop had the message but never confirmed it; after kill -9
    and a restart the message is delivered again (to a working next hop now: the route is
    changed, not the port reused, which another socket may have taken meanwhile)."""
    hang = HangsAfterData()
    server = relay_server(server_factory, hang.port)
    send(server, [f"important@{RELAY}"])
    assert hang.got_message.wait(15)
    server.kill9()
    hang.close()
    sink = sinks()
    server.extra["transport_maps"] = f"inline:{{{RELAY}=smtp:[127.0.0.1]:{sink.port}}}"
    server.start()
    server.wait_log(r"^smtp: .* to=<important@relay.test>, .* status=sent ")
    wait_until(lambda: len(sink.messages()) == 1)
    assert b"Subject: relay test" in sink.messages()[0]


def _flock_holder(path: Path) -> int:
    """The pid holding an flock on `path` (/proc/locks: `N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE ...`)."""
    inode = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1] == "FLOCK" and int(fields[5].rsplit(":", 1)[1]) == inode:
            return int(fields[4])
    raise AssertionError(f"nobody holds a lock on {path}")


def test_a_dead_workers_mail_is_claimed_at_once(server_factory) -> None:  # type: ignore[no-untyped-def]
    """The worker delivering a message owns its queue file (an flock); killed with -9, its
    lock is gone and the queue-running worker claims the file at once (told by the master),
    not after a restart or a long sweep: the next hop sees the message a second time."""
    hang = HangsAfterData()
    try:
        server = relay_server(server_factory, hang.port, smtpd_processes="2")
        send(server, [f"orphan@{RELAY}"])
        wait_until(lambda: hang.messages == 1)
        active = server.root / "data" / "queue" / "active"
        (queue_file,) = list(active.iterdir())
        owner = _flock_holder(queue_file)
        assert owner != server.proc.pid  # a worker, not the master
        os.kill(owner, signal.SIGKILL)
        wait_until(lambda: hang.messages == 2)  # redelivered by another (or the new) worker
        picked = server.wait_log(rf"^qmgr: {queue_file.name}: from=<alice@example.test>", 2)
        assert len(picked) == 2
        assert _flock_holder(queue_file) not in (owner, server.proc.pid)
    finally:
        hang.close()


def test_mx_lookup_and_null_mx(server_factory, sinks) -> None:  # type: ignore[no-untyped-def]
    """`domain:port` next hops are looked up as MX (the test DNS server: mailgate.test MX 10
    mx.mailgate.test, A 127.0.0.1); a null MX bounces at once."""
    sink = sinks()
    server = server_factory(
        relay_domains=f"{RELAY}, void.test",
        transport_maps=f"inline:{{{{{RELAY}=smtp:mailgate.test:{sink.port}}}, "
                       "{void.test=smtp:nullmx.mailgate.test}}").start()
    send(server, [f"mx@{RELAY}"])
    line = server.wait_log(r"^smtp: .* to=<mx@relay.test>, .* status=sent ")[0]
    assert f"relay=mx.mailgate.test[127.0.0.1]:{sink.port}, " in line
    send(server, ["nobody@void.test"])
    line = server.wait_log(r"^smtp: .* to=<nobody@void.test>, .* status=bounced ")[0]
    assert "relay=none, " in line and "dsn=5.1.10, " in line
    assert "(Domain nullmx.mailgate.test does not accept mail (nullMX))" in line


def test_expiry_returns_mail_with_the_last_reason(server_factory, sinks) -> None:  # type: ignore[no-untyped-def]
    """maximal_queue_lifetime = 0: one attempt, then the message goes back to its sender."""
    failing = sinks("-r", "rcpt")
    server = relay_server(server_factory, failing.port, maximal_queue_lifetime="0s")
    send(server, [f"gone@{RELAY}"])
    server.wait_log(r"^smtp: .* status=deferred ")
    server.wait_log(r"^qmgr: [0-9A-F]+: from=<alice@example.test>, status=expired, "
                    r"returned to sender$")
    dsn = _dsn(server)
    report = {k: v for block in dsn.get_payload()[1].get_payload() for k, v in block.items()}
    assert report["Action"] == "failed" and report["Status"].startswith("4.")
    assert " said: 4" in dsn.get_payload()[0].get_payload()


def test_delay_warning(server_factory, sinks) -> None:  # type: ignore[no-untyped-def]
    failing = sinks("-r", "rcpt")
    server = relay_server(server_factory, failing.port, delay_warning_time="1s")
    send(server, [f"slow@{RELAY}"])
    server.wait_log(r"^smtp: .* status=deferred ")

    def warned() -> bool:  # retried (flush) until the message is a second old
        queue(server, "flush")
        return any("sender delay notification" in x for x in server.log())

    wait_until(warned)
    notice = _dsn(server)
    assert notice["Subject"] == "Delayed Mail (still being retried)"
    report = {k: v for block in notice.get_payload()[1].get_payload() for k, v in block.items()}
    assert report["Action"] == "delayed"


def test_relayhost_discard_and_error_transports(server_factory, sinks) -> None:  # type: ignore[no-untyped-def]
    sink = sinks()
    server = server_factory(default_transport="smtp", relayhost=f"[127.0.0.1]:{sink.port}",
                            transport_maps="inline:{{gone.test=discard:dropped here}, "
                                           "{bad.test=error:5.1.2 no such domain}}").start()
    send(server, ["someone@anywhere.example", "x@gone.test", "y@bad.test"])
    line = server.wait_log(r"^smtp: .* to=<someone@anywhere.example>, .* status=sent ")[0]
    assert f"relay=127.0.0.1[127.0.0.1]:{sink.port}, " in line  # relayhost, no MX lookup
    line = server.wait_log(r"^discard: .* to=<x@gone.test>, ")[0]
    assert "relay=none, " in line and "status=sent (dropped here)" in line
    line = server.wait_log(r"^error: .* to=<y@bad.test>, ")[0]
    assert "dsn=5.1.2, status=bounced (no such domain)" in line
    server.wait_log(r"^bounce: .* sender non-delivery notification: ")


class TlsReceiver:
    """Offers STARTTLS (a throw-away self-signed certificate) and records what it saw."""

    def __init__(self, root: Path) -> None:
        cert, key = root / "cert.pem", root / "key.pem"
        subprocess.run([require("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-subj", "/CN=localhost", "-days", "1", "-keyout", str(key),
                        "-out", str(cert)], check=True, capture_output=True, timeout=60)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.tls_version = ""
        self.message = b""
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            raw, _ = self.sock.accept()
        except OSError:
            return
        conn: socket.socket = raw
        conn.sendall(b"220 tls.test ESMTP\r\n")
        reader = conn.makefile("rb")
        while True:
            line = reader.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-tls.test\r\n" + (b"" if self.tls_version
                                                    else b"250-STARTTLS\r\n") + b"250 8BITMIME\r\n")
            elif verb == b"STAR":
                conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                conn = self.context.wrap_socket(conn, server_side=True)
                self.tls_version = conn.version() or ""
                reader = conn.makefile("rb")
            elif verb == b"DATA":
                conn.sendall(b"354 go ahead\r\n")
                while (data := reader.readline()) not in (b".\r\n", b""):
                    self.message += data
                conn.sendall(b"250 2.0.0 Ok: queued as TLS1\r\n")
                self.done.set()
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                break
            else:
                conn.sendall(b"250 ok\r\n")
        conn.close()

    def close(self) -> None:
        self.sock.close()


def test_opportunistic_starttls(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    receiver = TlsReceiver(tmp_path)
    try:
        server = relay_server(server_factory, receiver.port, smtp_tls_security_level="may")
        send(server, [f"secret@{RELAY}"])
        line = server.wait_log(r"^smtp: .* status=sent ")[0]
        assert "(250 2.0.0 Ok: queued as TLS1)" in line
        assert receiver.done.wait(10) and receiver.tls_version.startswith("TLSv1")
        assert b"Subject: relay test" in receiver.message
    finally:
        receiver.close()


def test_filter_action_routes_the_message(server_factory, sinks) -> None:  # type: ignore[no-untyped-def]
    """FILTER smtp:[127.0.0.1]:PORT (access(5)) sends every recipient to the filter."""
    sink = sinks()
    server = server_factory(smtpd_sender_restrictions="check_sender_access "
                            f"inline:{{{{alice@example.test=FILTER smtp:[127.0.0.1]:{sink.port}}}}}"
                            ).start()
    send(server, ["bob@example.test"])
    line = server.wait_log(r"^smtp: .* to=<bob@example.test>, .* status=sent ")[0]
    assert f"relay=127.0.0.1[127.0.0.1]:{sink.port}, " in line
    assert not server.maildir_files("bob")


def test_recipient_limit_splits_transactions(server_factory, sinks) -> None:  # type: ignore[no-untyped-def]
    sink = sinks()
    server = relay_server(server_factory, sink.port, default_destination_recipient_limit="2")
    send(server, [f"r{i}@{RELAY}" for i in range(5)])
    server.wait_log(r"^smtp: .* status=sent ", count=5)
    wait_until(lambda: len(sink.messages()) == 3)  # 2 + 2 + 1 recipients


@pytest.mark.parametrize(("option", "command", "status"), [
    ("-r", "mail", "deferred"), ("-f", "mail", "bounced"),
    ("-r", "data", "deferred"), ("-f", "data", "bounced"),
    ("-f", ".", "bounced"),
])
def test_sink_failures_at_each_command(server_factory, sinks, option: str, command: str,  # type: ignore[no-untyped-def]
                                       status: str) -> None:
    sink = sinks(option, command)
    server = relay_server(server_factory, sink.port)
    send(server, [f"user@{RELAY}"])
    line = server.wait_log(rf"^smtp: .* status={status} ")[0]
    said = {"mail": "MAIL FROM", "data": "DATA", ".": "end of DATA"}[command]
    assert f"(in reply to {said} command))" in line
    assert f"dsn={'4' if option == '-r' else '5'}." in line
