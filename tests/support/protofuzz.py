"""Hostile SMTP dialogues for the protocol-level differential fuzzer: a seeded state machine
over SMTP states (tests/interop/test_protocol_fuzz.py plays them to mailgate and Postfix).

A dialogue is a list of steps `(kind, bytes)`: a "cmd" step is one write of command input (one
line, or a pipelined group, possibly with BDAT chunks or DATA text inside); a "text" step is
message text, sent only while the server is reading DATA (after its 354), so that both servers
see the same input whatever they answer. Deterministic for a given seed.
"""

from __future__ import annotations

import random

Step = tuple[str, bytes]

# Main.cf fragments, the same for both servers. Every one turns the tarpit off (the
# differential test of restrictions covers its timing) and sets Postfix's error-limit defaults
# over the recorded-dialogue base (tests/data/dialogues/main.cf), which raises them to 1000.
COMMON = {"inet_protocols": "ipv4",  # as the reference instance has it
          "smtpd_error_sleep_time": "0s", "smtpd_soft_error_limit": "10",
          "smtpd_hard_error_limit": "20", "smtpd_junk_command_limit": "100"}
FRAGMENTS: dict[str, dict[str, str]] = {
    "defaults": {},
    "restrict": {
        "smtpd_delay_reject": "no",
        "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
        "smtpd_client_restrictions": "check_client_access inline:{192.0.2.1=REJECT}",
        "smtpd_helo_restrictions": "reject_invalid_helo_hostname, "
                                   "reject_non_fqdn_helo_hostname",
        "smtpd_sender_restrictions": "reject_non_fqdn_sender, check_sender_access "
                                     "inline:{bad.example=REJECT}",
        "smtpd_recipient_restrictions": "reject_non_fqdn_recipient, "
                                        "reject_unlisted_recipient",
        "smtpd_relay_restrictions": "reject_unauth_destination",
        "smtpd_data_restrictions": "reject_unauth_pipelining",
        "smtpd_etrn_restrictions": "reject",
        "smtpd_helo_required": "yes",
    },
    "limits": {
        "smtpd_soft_error_limit": "2", "smtpd_hard_error_limit": "4",
        "smtpd_junk_command_limit": "3", "smtpd_recipient_limit": "3",
        "message_size_limit": "2000",
        "smtpd_forbid_unauth_pipelining": "yes",
    },
    "noutf8": {
        "smtputf8_enable": "no",
        "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
        "disable_vrfy_command": "yes",
        "strict_rfc821_envelopes": "yes",
    },
    "nochunking": {
        "smtpd_discard_ehlo_keywords": "chunking, silent-discard",
        "smtpd_hard_error_limit": "6",
    },
}
NAMES = tuple(FRAGMENTS)


def fragment_of(seed: int) -> str:
    return NAMES[seed % len(NAMES)]


def settings(name: str) -> dict[str, str]:
    return {**COMMON, **FRAGMENTS[name]}


HELOS = ("client.example", "[127.0.0.1]", "nodots", "a b", "bad_name!", "-x.example",
         "ok.example.", "bücher.example", "[IPv6:::1]", "[1.2.3]", "[300.1.1.1]", "1.2.3.4",
         "x" * 300 + ".example", "<client.example>", '"quoted"', "a@b", "bad.example")
ADDRESSES = ("alice@example.test", "bob@example.test", "nobody@example.test", "postmaster",
             "Postmaster@Example.TEST", "s@sender.example", "a@bad.example", "user@elsewhere.example",
             "user@", "@example.test", "a@b@c", "a b@c.example", "user@-bad.example",
             "user@[127.0.0.1]", "user@[300.1.1.1]", "alice%elsewhere.example@example.test",
             "alice@example.test.", "jörg@bücher.example", "Ålice@example.test", "x@nodots",
             '"quoted local"@example.test', '"unbalanced@example.test', "(c)a@b.example",
             "a@b.example (comment)", "a@b.example,c@d.example", "a..b@example.test")
SOURCE_ROUTES = ("@route.example:alice@example.test", "@a.example,@b.example:bob@example.test",
                 "@:alice@example.test", "@route.example,alice@example.test")
MAIL_PARAMS = ("SIZE=100", "SIZE=", "SIZE=abc", "SIZE=-1", "SIZE=99999999999999999999999",
               "SIZE=100000000", "SIZE=9223372036854775807", "BODY=8BITMIME", "BODY=7BIT",
               "BODY=BINARYMIME", "BODY=", "body=8bitmime", "SMTPUTF8", "smtputf8",
               "SMTPUTF8=yes", "AUTH=<>", "AUTH=alice@example.test", "AUTH=", "RET=FULL",
               "RET=HDRS", "RET=BAD", "RET=", "ENVID=abc", "ENVID=a+2Bb", "ENVID=bad+zz",
               "ENVID=", "ENVID=a=b", "FOO", "FOO=bar", "=", "NOTIFY=NEVER", "SIZE=1 SIZE=2",
               "RET=FULL RET=HDRS", "ENVID=a ENVID=b", "BODY=7BIT BODY=8BITMIME",
               "SMTPUTF8 SMTPUTF8", "AUTH=<> AUTH=<>", "SIZE=00012", "XVERP")
RCPT_PARAMS = ("NOTIFY=NEVER", "NOTIFY=SUCCESS,FAILURE", "NOTIFY=NEVER,SUCCESS",
               "NOTIFY=BOGUS", "NOTIFY=", "NOTIFY=success,delay", "NOTIFY=,SUCCESS",
               "ORCPT=rfc822;alice@example.test", "ORCPT=rfc822", "ORCPT=;x",
               "ORCPT=rfc822;a+2Bb", "ORCPT=rfc822;bad+zz", "ORCPT=utf-8;alice@example.test",
               "ORCPT=", "FOO=bar", "NOTIFY=NEVER NOTIFY=NEVER", "SIZE=10", "BODY=7BIT",
               "ORCPT=rfc822;a ORCPT=rfc822;b")
OTHERS = ("NOOP", "NOOP extra words", "RSET", "RSET x", "HELP", "HELP MAIL", "QUIT now",
          "VRFY", "VRFY alice@example.test", "VRFY <alice@example.test>", "VRFY nobody",
          "VRFY <unbalanced", "VRFY alice@example.test SMTPUTF8", "VRFY a b c",
          "VRFY jörg@bücher.example", "VRFY jörg@bücher.example SMTPUTF8", "ETRN",
          "ETRN example.test", "ETRN @example.test", "ETRN #x.example", "ETRN a b",
          "ETRN [127.0.0.1]", "ETRN bad_name", "STARTTLS", "STARTTLS x", "AUTH PLAIN AGFiYw==",
          "AUTH", "XCLIENT", "XCLIENT NAME=x.example", "XCLIENT ADDR=bad", "XCLIENT FOO=bar",
          "XCLIENT ADDR=192.0.2.1 NAME=host.example", "XCLIENT NAME=[UNAVAILABLE]",
          "XCLIENT HELO=x.example PROTO=ESMTP", "XCLIENT PROTO=bogus", "XCLIENT LOGIN=x",
          "XCLIENT ADDR=IPV6:::1", "XCLIENT ADDR=[1.2.3.4]", "XCLIENT NAME",
          "XCLIENT ADDR=10.0.0.1 PORT=99999", "XFORWARD NAME=x.example", "XFORWARD",
          "FOO", "XYZZY bar", "MAILFROM:<a@b.example>", "RCPT", "MAIL", "MAIL FROM",
          "RCPT TO", "DATA x", "BDAT", "BDAT x", "BDAT 3 LAST extra", "BDAT -1", "BDAT +3",
          "BDAT 1e3", "BDAT 3 NOTLAST", "EXPN alice", "TURN", "SEND FROM:<a@b.example>",
          "  NOOP", "NOOP\t", "\tRSET", " ", "", "Subject: hello", "From: a@b.example",
          "GET / HTTP/1.0", "POST /x HTTP/1.1", "CONNECT host:25 HTTP/1.0")
RAW_LINES = (b"NOOP \xff\xfe", b"\xff\xfe", b"MAIL FROM:<\xe9@x.example>",
             b"RCPT TO:<a\xe9@example.test>", b"HELO b\xffx.example", b"NO\x00OP",
             b"\x00", b"RSET\x00junk", b"VRFY \xc3(", b"EHLO \xc3\xa9.example",
             b"MAIL FROM:<a@b.example>\x00 SIZE=1", b"FOO\r\r", b"NOOP\r \r")
TEXTS = (b"Subject: fuzz\r\n\r\nbody\r\n.\r\n", b".\r\n", b"..\r\n.\r\n",
         b"Subject: dots\r\n\r\n..x\r\n.y\r\n.\r\n", b"a\x00b\r\n\xff\xfe\r\n.\r\n",
         b"x" * 3000 + b"\r\n.\r\n", b"Subject: t\r\n\r\n" + b"y" * 2100 + b"\r\n.\r\n",
         b"a\rb\r\n.\r\n", b"Subject: late\r\n\r\nQUIT\r\nRSET\r\n.\r\n")
PAYLOADS = (b"", b"abc", b"Subject: chunk\r\n\r\nbody\r\n", b"a\r\n.\r\n", b"x" * 2500,
            b"RSET\r\n", b"\x00\xff")


def _verb(rng: random.Random, verb: str) -> str:
    """The verb as a hostile client might spell it."""
    pick = rng.random()
    if pick < 0.12:
        return verb.lower()
    if pick < 0.18:
        return verb[0] + verb[1:].lower()
    return verb


def _space(rng: random.Random) -> str:
    return rng.choice((" ",) * 8 + ("  ", "\t", " \t "))


class Generator:
    """The state machine: `state` is what the client believes (init, helo, mail, rcpt)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.state = "init"
        self.steps: list[Step] = []

    def line(self, text: str | bytes) -> bytes:
        return (text.encode() if isinstance(text, str) else text) + b"\r\n"

    def cmd(self, *lines: str | bytes) -> None:
        self.steps.append(("cmd", b"".join(self.line(x) for x in lines)))

    def greeting(self) -> str:
        rng = self.rng
        verb = _verb(rng, rng.choice(("EHLO", "EHLO", "HELO")))
        pick = rng.random()
        if pick < 0.08:
            return verb
        name = rng.choice(("client.example",) * 6 + HELOS)
        return f"{verb}{_space(rng)}{name}"

    def address(self) -> str:
        rng = self.rng
        pick = rng.random()
        if pick < 0.06:
            return rng.choice(SOURCE_ROUTES)
        if pick < 0.1:
            target = rng.choice((500, 990, 1000, 2030, 2046, 2100, 5000))
            return "a" * max(target - 30, 1) + "@example.test"
        return rng.choice(("alice@example.test",) * 8 + ADDRESSES)

    def envelope(self, verb: str, keyword: str, params: tuple[str, ...]) -> str:
        rng = self.rng
        addr = self.address()
        form = rng.random()
        if form < 0.75:
            arg = f"{keyword}:<{addr}>"
        else:
            arg = rng.choice((f"{keyword}: <{addr}>", f"{keyword}:{addr}", f"{keyword} <{addr}>",
                              f"{keyword}:<{addr}", f"{keyword}:<{addr}>>",
                              f"{keyword}:<<{addr}>>", f"{keyword}:", f"{keyword}:<>",
                              f"{keyword.lower()}:<{addr}>", f"{keyword}:<{addr}> <x@y>",
                              f"{keyword}:\"<{addr}>", f"{keyword}:<{addr}>\""))
        text = f"{_verb(self.rng, verb)}{_space(rng)}{arg}"
        for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 3))):
            text += _space(rng) + rng.choice(params)
        return text

    def mail(self) -> str:
        if self.rng.random() < 0.15:
            return f"MAIL FROM:<>{self.rng.choice(('', ' BODY=8BITMIME', ' SIZE=10'))}"
        return self.envelope("MAIL", "FROM", MAIL_PARAMS)

    def rcpt(self) -> str:
        return self.envelope("RCPT", "TO", RCPT_PARAMS)

    def long_line(self) -> str:
        rng = self.rng
        verb = rng.choice(("NOOP ", "MAIL FROM:<", "RCPT TO:<", "VRFY ", "FOO ", "EHLO ", ""))
        target = rng.choice((510, 512, 513, 998, 1000, 1001, 2040, 2047, 2048, 2049, 2100,
                             4100, 9000))
        return verb + "b" * max(target - len(verb), 0)

    def junk(self) -> str | bytes:
        pick = self.rng.random()
        if pick < 0.15:
            return self.rng.choice(RAW_LINES)
        if pick < 0.25:
            return self.long_line()
        return self.rng.choice(OTHERS)

    def data(self) -> None:
        rng = self.rng
        verb = _verb(rng, "DATA")
        if rng.random() < 0.1:  # DATA with its text in the same write: unauth pipelining
            self.steps.append(("cmd", self.line(verb) + rng.choice(TEXTS)))
        else:
            self.cmd(verb)
            self.steps.append(("text", rng.choice(TEXTS)))
        self.state = "helo"

    def bdat(self) -> None:
        """One or more chunks, with bad sizes, LAST mixes and commands inside chunks."""
        rng = self.rng
        parts = []
        for _ in range(rng.randint(1, 3)):
            payload = rng.choice(PAYLOADS)
            size = len(payload)
            odd = rng.random()
            if odd < 0.1 and size:  # a short size: the rest is read as a command line
                size -= rng.randint(1, min(3, size))
                payload += b"\r\n"
            elif odd < 0.15:  # the next command inside the chunk
                size += 6
                payload += b"RSET\r\n"
            word = rng.choice(("BDAT", "BDAT", "BDAT", "bdat"))
            last = rng.choice(("", "", " LAST", " last"))
            parts.append(f"{word} {size}{last}\r\n".encode() + payload)
        if rng.random() < 0.3:
            self.steps.append(("cmd", b"".join(parts)))
        else:
            self.steps += [("cmd", part) for part in parts]
        if rng.random() < 0.15:
            self.cmd(rng.choice(("DATA", "MAIL FROM:<a@b.example>", "RCPT TO:<bob@example.test>",
                                 "BDAT 0 LAST", "RSET")))

    def pipelined(self) -> None:
        items = [self.rng.choice((self.mail, self.rcpt, self.junk, self.greeting))()
                 for _ in range(self.rng.randint(2, 5))]
        self.cmd(*items)

    def step(self) -> None:
        rng = self.rng
        pick = rng.random()
        if pick < 0.12:
            self.cmd(self.junk())
        elif pick < 0.2:
            self.pipelined()
        elif self.state == "init" or pick < 0.25:
            self.cmd(self.greeting())
            self.state = "helo"
        elif self.state == "helo" or pick < 0.3:
            self.cmd(self.mail())
            self.state = "mail"
        elif self.state == "mail" or pick < 0.55:
            self.cmd(self.rcpt())
            self.state = "rcpt"
        elif pick < 0.75:
            self.data()
        elif pick < 0.9:
            self.bdat()
            self.state = "helo"
        else:
            self.cmd(rng.choice(("RSET", "RSET", "NOOP", "VRFY bob@example.test")))
            self.state = "helo"


def dialogue(seed: int) -> list[Step]:
    """The client steps of seed `seed`'s session (its fragment is `fragment_of(seed)`)."""
    rng = random.Random(seed)
    gen = Generator(rng)
    for _ in range(rng.randint(3, 25)):
        gen.step()
    if rng.random() < 0.85:
        gen.cmd(rng.choice(("QUIT",) * 6 + ("quit", "QUIT x")))
    return gen.steps


# --- playing a dialogue ----------------------------------------------------------------------

_CHUNK_DIGITS = 18  # larger BDAT sizes are malformed for both (off_t)
_ENDING = (b"421 ", b"521 ", b"221 2.7.0 ")  # replies after which the server closes


def bdat_size(line: bytes) -> int | None:
    """The chunk size a well-formed `BDAT size [LAST]` line announces (None otherwise)."""
    words = line.split()
    if not words or words[0].upper() != b"BDAT" or len(words) not in (2, 3):
        return None
    if not (words[1].isdigit() and len(words[1]) <= _CHUNK_DIGITS):
        return None
    if len(words) == 3 and words[2].upper() != b"LAST":
        return None
    return int(words[1])


class Player:
    """One session: sends steps and reads each reply, following the server's mode from its
    replies (a 354 starts DATA text, a BDAT line is followed by its chunk). `out` is the
    transcript: `C: ` writes and `S: ` reply lines, both as Python byte literals."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.out: list[str] = []
        self.mode = "cmd"  # cmd, data (text up to CRLF.CRLF), bdat (chunk octets owed)
        self.pending = b""  # sent input not yet matched with the replies it gets
        self.owed = 0
        self.ended = False
        self._reply()

    def _line(self) -> bytes | None:
        while b"\n" not in self.buf:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return b"<TIMEOUT>"
            except OSError:
                return None
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def _reply(self) -> bytes:
        """Read one (multi-line) reply into `out`; its last line."""
        while True:
            line = self._line()
            if line is None or line == b"<TIMEOUT>":
                self.out.append("S: <CLOSED>" if line is None else "S: <TIMEOUT>")
                self.ended = True
                return b""
            self.out.append(f"S: {line!r}")
            if line[3:4] != b"-":
                break
        if line.startswith(_ENDING):
            self.ended = True
        return line

    def send(self, data: bytes) -> None:
        self.out.append(f"C: {data[:300]!r}" + (f" ... ({len(data)} bytes)"
                                                  if len(data) > 300 else ""))
        try:
            self.sock.sendall(data)
        except OSError:
            self.out.append("S: <SEND FAILED>")
            self.ended = True
            return
        self.pending += data
        self._advance()

    def _advance(self) -> None:
        """Read the replies that the input sent so far must have produced."""
        while not self.ended:
            if self.mode == "bdat":
                take = min(self.owed, len(self.pending))
                self.pending, self.owed = self.pending[take:], self.owed - take
                if self.owed:
                    return
                self.mode = "cmd"
                self._reply()
            elif self.mode == "data":
                end = self.pending.find(b"\r\n.\r\n")
                if end < 0:
                    return
                self.pending, self.mode = self.pending[end + 5:], "cmd"
                self._reply()
            else:
                nl = self.pending.find(b"\n")
                if nl < 0:
                    return
                line, self.pending = self.pending[:nl], self.pending[nl + 1:]
                size = bdat_size(line)
                if size is not None:
                    self.mode, self.owed = "bdat", size
                    continue
                if self._reply().startswith(b"354"):
                    self.mode, self.pending = "data", b"\r\n" + self.pending

    def play(self, steps: list[Step]) -> list[str]:
        """Send the steps (text only while DATA is read; a lone `.` ends unexpected DATA)."""
        try:
            for kind, data in steps:
                if self.ended:
                    break
                if kind == "text" and self.mode != "data":
                    continue
                if kind == "cmd" and self.mode == "data":
                    self.send(b".\r\n")
                    if self.ended:
                        break
                self.send(data)
        finally:
            self.sock.close()
        return self.out
