"""Fuzz targets for the wire parsers: the SMTP core, tokens and addresses, policy protocol,
DNS decoder and the report's log-line reader. Each `run(data)` raises only on a defect."""

from __future__ import annotations

import random
from datetime import datetime

from mailgate.addressing import AddressResolver, smtpd_resolve, strip_extension
from mailgate.dns import wire
from mailgate.maps import default_registry
from mailgate.maps.matchlist import DomainList
from mailgate.policy import protocol as policy
from mailgate.report import rejects
from mailgate.report.logline import Clock, hour, parse_bound, stamp
from mailgate.report.summary import Summary
from mailgate.smtp.protocol import (
    NEED_DATA,
    Chunk,
    Closed,
    Command,
    Message,
    Mode,
    ServerConnection,
)
from mailgate.smtp.tokens import TokType, extract_addr, log_form, quote_local_part, smtpd_token
from support.fuzz_seeds import DNS_SEEDS, LOG_SEEDS, POLICY_SEEDS, SMTP_SEEDS
from support.fuzzing import Target, ipv4, ipv6, lines_of, split_points, word

LINE_LIMIT = 128  # small limits, so that random input reaches them
SIZE_LIMIT = 1024
BDAT_MAX = 4096


class Defect(AssertionError):
    """An invariant does not hold (the fuzzer counts it as a crash)."""


def check(ok: object, why: str) -> None:
    if not ok:
        raise Defect(why)


# --- SMTP core --------------------------------------------------------------------------
def bound(conn: ServerConnection) -> int:
    """The most bytes `conn` may hold once next_event() said NEED_DATA (derived from the
    settings): a partial command line, a partial message up to the size limit plus the
    end-of-data lookbehind, or the rest of the current BDAT chunk."""
    if conn.mode is Mode.COMMAND:
        return LINE_LIMIT
    if conn.mode is Mode.DATA:
        return SIZE_LIMIT + 2 + 4
    if conn.mode is Mode.BDAT:
        return conn._bdat_left
    return 0


def check_bounds(conn: ServerConnection) -> None:
    check(conn.mode in Mode, f"mode {conn.mode!r}")
    check(len(conn._buf) <= bound(conn), f"buffer {len(conn._buf)} > {bound(conn)} in {conn.mode}")
    head = conn._long_head
    check(head is None or len(head) <= LINE_LIMIT, "long line head over the limit")


def check_command(ev: Command) -> None:
    check(len(ev.line.encode("utf-8", "surrogateescape")) <= LINE_LIMIT, "line over the limit")
    check("\n" not in ev.line and "\0" not in ev.line, "LF or NUL in a command line")
    check(ev.verb == (ev.tokens[0].value.upper() if ev.tokens else ""), "verb is not token 1")
    check(all(t.value for t in ev.tokens), "empty token")


def reply_to(conn: ServerConnection, ev: Command) -> None:
    """What a session does with a command: one reply (a 354 moves the core to DATA itself),
    and the chunk a BDAT announces."""
    out = conn.send(250 if ev.verb != "DATA" else 354, ["first", "last"] if ev.verb == "EHLO" else "ok")
    check(out.endswith(b"\r\n") and out[:3].isdigit(), "reply format")
    if ev.verb == "BDAT" and len(ev.tokens) > 1 and ev.tokens[1].value.isdigit():
        size = int(ev.tokens[1].value)
        last = len(ev.tokens) > 2 and ev.tokens[2].value.upper() == "LAST"
        conn.start_chunk(min(size, 10**9), last, discard=size > BDAT_MAX)


def drain(conn: ServerConnection, budget: int) -> tuple[int, int]:
    """Take events until NEED_DATA or Closed; returns (commands, events)."""
    commands = events = 0
    while True:
        events += 1
        check(events <= budget, "more events than input bytes")
        ev = conn.next_event()
        if ev is NEED_DATA:
            check_bounds(conn)
            return commands, events
        if isinstance(ev, Command):
            commands += 1
            check_command(ev)
            reply_to(conn, ev)
        elif isinstance(ev, Message):
            check(ev.too_big or len(ev.content) <= SIZE_LIMIT, "message over the limit kept")
            check(ev.too_big == (ev.size > SIZE_LIMIT), "too_big disagrees with size")
            check(conn.mode is Mode.COMMAND, "mode after a message")
        elif isinstance(ev, Chunk):
            check(len(ev.data) <= BDAT_MAX, "chunk larger than asked")
            check(conn.mode is Mode.COMMAND, "mode after a chunk")
        elif isinstance(ev, Closed):
            check(conn.mode is Mode.CLOSED, "Closed but mode is not CLOSED")
            check(conn.next_event() is NEED_DATA, "events after Closed")
            return commands, events


def run_smtp_stream(data: bytes) -> None:
    """Any byte stream, read in odd pieces, with DATA/BDAT transitions driven by replies."""
    conn = ServerConnection(LINE_LIMIT, SIZE_LIMIT)
    budget = len(data) + 8
    for piece in split_points(data):
        conn.receive_data(piece)
        drain(conn, budget)
    conn.receive_data(b"")
    drain(conn, budget)
    check(conn.mode is Mode.CLOSED, "not closed at the end")


def run_smtp_commands(data: bytes) -> None:
    """Command mode only: exactly one Command per LF, however long the line, then Closed."""
    conn = ServerConnection(LINE_LIMIT, SIZE_LIMIT)
    commands = 0
    for piece in split_points(data, salt=3):
        conn.receive_data(piece)
        while (ev := conn.next_event()) is not NEED_DATA:
            check(isinstance(ev, Command), f"unexpected {ev!r}")
            assert isinstance(ev, Command)
            check_command(ev)
            conn.send(250, "ok")
            commands += 1
        check_bounds(conn)
    conn.receive_data(b"")
    check(conn.next_event() == Closed(None), "no Closed at the end")
    lines = data.count(b"\n")
    check(commands == lines, f"{commands} commands for {lines} lines")


def gen_smtp(rng: random.Random) -> bytes:
    verbs = ("EHLO", "HELO", "MAIL FROM:", "RCPT TO:", "DATA", "BDAT", "RSET", "NOOP", "QUIT",
             "VRFY", "ETRN", "XCLIENT", "STARTTLS", "AUTH", "")
    out = []
    for _ in range(rng.randrange(1, 10)):
        verb = rng.choice(verbs)
        if verb == "BDAT":
            n = rng.choice((0, 1, 5, 100, BDAT_MAX + 1))
            out.append(f"BDAT {n}{' LAST' if rng.random() < 0.5 else ''}\r\n".encode())
            out.append(b"x" * rng.choice((n, max(n - 1, 0), n + 3)))
        elif verb == "DATA":
            out.append(b"DATA\r\n" + rng.choice(SMTP_SEEDS[-3:]))
        else:
            arg = f"<{word(rng)}@{word(rng)}>" if verb.endswith(":") else word(rng)
            out.append(f"{verb}{'' if verb.endswith(':') else ' '}{arg}\r\n".encode())
    return b"".join(out)


# --- tokens and addresses ---------------------------------------------------------------
def _resolver() -> AddressResolver:
    reg = default_registry()
    doms = DomainList.build(["example.test", "localhost", "[127.0.0.1]"], reg)
    return AddressResolver("example.test", doms, DomainList.build(["alias.test"], reg),
                           DomainList.build(["virtual.test"], reg),
                           DomainList.build(["relay.test"], reg), frozenset({"127.0.0.1"}))


RESOLVER = _resolver()


def run_tokens(data: bytes) -> None:
    line = data.decode("utf-8", "surrogateescape")
    tokens = smtpd_token(line)
    check(all(t.value for t in tokens), "empty token")
    check(sum(len(t.value) for t in tokens) <= len(line), "tokens longer than the line")
    for t in tokens[:4]:
        check(t.type in TokType, "token type")
        for strict in (False, True):
            got = extract_addr(t.value, strict)
            check(isinstance(got.address, str), "address type")
        log_form(got.address)
        quote_local_part(got.address)
    extract_addr(line)


def run_addressing(data: bytes) -> None:
    address = extract_addr(data.decode("utf-8", "surrogateescape")).address
    for addr in (address, address + "@example.test", address + "%relay.test@localhost"):
        found = RESOLVER.resolve(addr)
        check(found.domain == found.domain.lower(), "domain not lower-cased")
        folded = smtpd_resolve(RESOLVER, addr, utf8=True)
        check(folded.cls is found.cls, "folding changed the class")
        strip_extension(found.localpart, "+-")


def gen_address(rng: random.Random) -> bytes:
    local = rng.choice((word(rng), f'"{word(rng, "a b@<>.,:;")}"', f"{word(rng)}%{word(rng)}",
                        f"{word(rng)}!{word(rng)}", ""))
    dom = rng.choice(("example.test", "EXAMPLE.test.", f"[{ipv4(rng)}]", f"[IPv6:{ipv6(rng)}]",
                      word(rng), ""))
    route = rng.choice(("", "@a.test:", "@a,@b:"))
    text = rng.choice(("<{r}{l}@{d}>", "{l}@{d}", "name <{r}{l}@{d}>", "<{l}>", "<>", "(c) {l}@{d}"))
    return text.format(r=route, l=local, d=dom).encode()


# --- policy protocol --------------------------------------------------------------------
def _read_all(chunks: list[bytes]) -> list[policy.Request | policy.ProtocolError]:
    reader = policy.PolicyReader()
    out: list[policy.Request | policy.ProtocolError] = []
    for chunk in chunks:
        out += reader.feed(chunk)
        buf = reader._buf
        check(b"\n" not in buf and len(buf) <= policy.MAX_LINE + 1, "reader buffer unbounded")
        check(len(reader._attrs) <= policy.MAX_ATTRIBUTES, "too many attributes kept")
    return out


def run_policy_reader(data: bytes) -> None:
    """The reader's answer does not depend on how the bytes arrive (its fast whole-block path
    and its line path agree)."""
    whole = _read_all([data])
    split = _read_all(split_points(data))
    check(whole == split, f"whole {whole!r} != split {split!r}")


def attrs_from(data: bytes) -> dict[str, str]:
    """Attributes made from any bytes: fields split at NUL, names without '=' or LF."""
    text = data.decode("utf-8", "replace")
    parts = text.split("\0")
    attrs = {}
    for name, value in zip(parts[::2], parts[1::2], strict=False):
        name = name.replace("=", "").replace("\n", "").replace("\r", "")
        if name:
            attrs[name] = value
    return attrs


def run_policy_roundtrip(data: bytes) -> None:
    attrs = attrs_from(data)
    encoded = policy.encode(attrs)
    got = _read_all(split_points(encoded))
    want = {k: v.replace("\n", " ").replace("\r", " ") for k, v in attrs.items()}
    if not attrs:
        check(got == [], f"empty request read as {got!r}")
    elif len(encoded.split(b"\n")) > policy.MAX_ATTRIBUTES + 2 or max(
            len(line) for line in encoded.split(b"\n")) > policy.MAX_LINE:
        check(len(got) == 1 and isinstance(got[0], policy.ProtocolError), "limits not enforced")
    else:
        check(got == [policy.Request(want)], f"{attrs!r} read back as {got!r}")


def gen_policy(rng: random.Random) -> bytes:
    lines = [f"{word(rng, 'abc_=')}={word(rng, 'xyz= @.')}" for _ in range(rng.randrange(0, 6))]
    sep = rng.choice(("\n", "\r\n"))
    return (sep.join(lines) + sep + sep).encode() * rng.randrange(1, 3)


# --- DNS wire decoder -------------------------------------------------------------------
def run_dns(data: bytes) -> None:
    try:
        reply = wire.parse(data)
    except wire.WireError:
        return
    check(0 <= reply.rcode <= 15 and reply.question == data[12 : 12 + len(reply.question)], "reply")
    for rr in reply.answer + reply.authority:
        check(isinstance(rr.data, str) and isinstance(rr.name, str), "record fields")
    try:
        wire.encode_name(data[12:80].decode("latin-1"))
    except wire.WireError:
        pass


def gen_dns(rng: random.Random) -> bytes:
    packet = bytearray(rng.choice(DNS_SEEDS))
    if rng.random() < 0.5:
        del packet[rng.randrange(len(packet) + 1) :]  # truncated
    else:  # a compression pointer somewhere, perhaps into itself
        i = rng.randrange(12, max(13, len(packet)))
        packet[i : i + 2] = bytes((0xC0 | rng.randrange(4), rng.randrange(256)))
    return bytes(packet)


# --- report log lines -------------------------------------------------------------------
NOW = datetime(2026, 11, 30, 12, 0, 0)


def run_report(data: bytes) -> None:
    lines = data.decode("utf-8", "replace").split("\n")
    summary = Summary(clock=Clock(NOW), since=datetime(2026, 1, 1) if data[:1] == b"S" else None)
    summary.consume(lines)
    summary.done()
    summary.hourly()
    summary.attacks.findings(1, 1)
    for line in lines[:4]:
        stamp(line)
        hour(line)
        Clock(NOW).parse(stamp(line))
        at = line.find("reject: ")
        if at >= 0:
            rejects.parse_reject(line[at + 8 :])
        try:
            parse_bound(line)
        except ValueError:
            pass


def gen_log(rng: random.Random) -> bytes:
    seed = rng.choice(LOG_SEEDS).decode()
    return seed.replace("192.0.2.1", rng.choice((ipv4(rng), ipv6(rng), word(rng)))).encode()


TARGETS: tuple[Target, ...] = (
    Target("smtp_stream", run_smtp_stream, SMTP_SEEDS, gen_smtp, 8192),
    Target("smtp_commands", run_smtp_commands, SMTP_SEEDS, gen_smtp, 8192),
    Target("smtp_tokens", run_tokens, SMTP_SEEDS[:6], lambda r: b"MAIL FROM:" + gen_address(r), 512),
    Target("addressing", run_addressing, (), gen_address, 512),
    Target("policy_reader", run_policy_reader, POLICY_SEEDS, gen_policy, 8192),
    Target("policy_roundtrip", run_policy_roundtrip, (), lambda r: lines_of(
        r, [lambda q: word(q, "ab=\r\n é"), lambda q: "\0"], 12, sep="\0"), 1024),
    Target("dns_wire", run_dns, DNS_SEEDS, gen_dns, 1024),
    Target("report", run_report, LOG_SEEDS, gen_log, 4096),
)
