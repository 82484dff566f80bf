"""postscreen's log lines and replies, byte for byte as Postfix 3.7.11 writes them."""

from __future__ import annotations

from mailgate.server.session import escape

# Replies (postscreen.c, postscreen_early.c, postscreen_smtpd.c)
PROTOCOL_ERROR_DROP = "521 5.5.1 Protocol error\r\n"
PROTOCOL_ERROR_ENFORCE = "550 5.5.1 Protocol error\r\n"
DENYLIST_DROP = "521 5.3.2 Service currently unavailable\r\n"
DENYLIST_ENFORCE = "550 5.3.2 Service currently unavailable\r\n"
NON_SMTP_DROP = "521 5.7.0 Error: I can break rules, too. Goodbye.\r\n"
TOO_MANY_CONNECTIONS = "421 4.7.0 Error: too many connections\r\n"
DEFAULT_FINAL = "421 4.3.2 Service currently unavailable\r\n"  # psc_new_session_state()
DEFAULT_RCPT = "450 4.3.2 Service currently unavailable\r\n"
BYE = "221 2.0.0 Bye\r\n"

_SIG_DIGITS = 2  # postscreen.h SIG_DIGS
_MAX_DIGITS = 2  # delay_logging_resolution_limit's default
_POW10 = (1, 10, 100, 1000, 10000, 100000, 1000000)
_MILLION = 1000000


def format_tv(seconds: float, sig_dig: int = _SIG_DIGITS, max_dig: int = _MAX_DIGITS) -> str:
    """format_tv(): a time with at most `sig_dig` significant digits below 10 s and at
    most `max_dig` decimals, rounded, trailing zeros dropped (`0`, `0.02`, `1.5`, `6`)."""
    sec = int(seconds)
    usec = round((seconds - sec) * _MILLION)
    if usec >= _MILLION:
        sec, usec = sec + 1, usec - _MILLION
    ures = _MILLION // _POW10[max_dig]
    wid = _POW10[sig_dig]
    if ures < _MILLION:
        if sec > 0:
            n = 1
            while sec >= n and n <= wid // 10:
                n *= 10
            ures = (_MILLION // wid) * n
        else:
            while usec >= wid * ures:
                ures *= 10
    if ures > 1:
        usec += ures // 2
        if usec >= _MILLION:
            sec, usec = sec + 1, usec - _MILLION
    out = str(sec)
    if usec >= ures:
        out += "."
        rem, n = usec, _MILLION // 10
        while rem >= ures and n > 0:
            out += "0123456789"[rem // n]
            rem %= n
            n //= 10
    return out


def printable_ascii(text: str) -> str:
    """printable(text, '?') on a command word."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def escaped(data: bytes, limit: int = 100) -> str:
    """PSC_SMTPD_ESCAPE_TEXT: the first `limit` bytes, C-escaped."""
    return escape(data[:limit])


def client(addr: str, port: int) -> str:
    """`[ADDR]:PORT`, postscreen's name for a client everywhere."""
    return f"[{addr}]:{port}"


def listed(word: str, respectful: bool, addr: str, port: int) -> str:
    """`ALLOWLISTED [ADDR]:PORT` (respectful_logging) or WHITELISTED, DENYLISTED or
    BLACKLISTED; `word` is ALLOW or DENY."""
    if not respectful:
        word = {"ALLOW": "WHITE", "DENY": "BLACK"}[word]
    return f"{word}LISTED {client(addr, port)}"


def veto(respectful: bool, addr: str, port: int) -> str:
    return f"{'ALLOW' if respectful else 'WHITE'}LIST VETO {client(addr, port)}"


def pregreet(count: int, elapsed: float, addr: str, port: int, data: bytes) -> str:
    return (f"PREGREET {count} after {format_tv(elapsed)} from {client(addr, port)}: "
            f"{escape(data)[:100]}")


def hangup(elapsed: float, addr: str, port: int, test_name: str) -> str:
    return f"HANGUP after {format_tv(elapsed)} from {client(addr, port)} in {test_name}"


def dnsbl_reply(code: str, addr: str, name: str) -> str:
    """PSC_DNSBL_FORMAT."""
    return f"{code} 5.7.1 Service unavailable; client [{addr}] blocked using {name}\r\n"


def generic_421(myhostname: str) -> str:
    """psc_smtpd_421_reply (no enhanced status code, as Postfix writes it)."""
    return f"421 {myhostname} Service unavailable - try again later\r\n"


def timeout_421(myhostname: str) -> str:
    return f"421 4.4.2 {myhostname} Error: timeout exceeded\r\n"


def soften(reply: str) -> str:
    """psc_soften_reply(): soft_bounce turns 5XX X.X.X into 4XX 4.X.X."""
    if reply[:1] == "5":
        reply = "4" + reply[1:]
    if reply[4:5] == "5":
        reply = reply[:4] + "4" + reply[5:]
    return reply
