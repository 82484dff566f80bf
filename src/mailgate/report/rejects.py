"""Reject lines taken apart: who, which code, which stage, why, and the Postfix restriction that
writes that text (`Relay access denied` is reject_unauth_destination)."""

from __future__ import annotations

import re
from typing import NamedTuple

_STAGES = ("Client host", "Helo command", "Sender address", "Recipient address",
           "Data command", "End-of-data", "Etrn command", "Unverified Client host")
# Reject texts → the Postfix restriction that writes them (first match wins).
_RESTRICTIONS: tuple[tuple[str, str, str], ...] = (
    ("User unknown in ", "Sender address", "reject_unlisted_sender"),
    ("User unknown in ", "", "reject_unlisted_recipient"),
    ("Relay access denied", "", "reject_unauth_destination"),
    ("blocked using ", "Client host", "reject_rbl_client"),
    ("blocked using ", "Helo command", "reject_rhsbl_helo"),
    ("blocked using ", "Sender address", "reject_rhsbl_sender"),
    ("blocked using ", "Recipient address", "reject_rhsbl_recipient"),
    ("cannot find your reverse hostname", "", "reject_unknown_reverse_client_hostname"),
    ("cannot find your hostname", "", "reject_unknown_client_hostname"),
    ("need fully-qualified hostname", "", "reject_non_fqdn_helo_hostname"),
    ("Invalid name", "", "reject_invalid_helo_hostname"),
    ("invalid ip address", "", "reject_invalid_helo_hostname"),
    ("Host not found", "Helo command", "reject_unknown_helo_hostname"),
    ("Domain not found", "Sender address", "reject_unknown_sender_domain"),
    ("Domain not found", "Recipient address", "reject_unknown_recipient_domain"),
    ("does not accept mail (nullMX)", "Sender address", "reject_unknown_sender_domain"),
    ("does not accept mail (nullMX)", "Recipient address", "reject_unknown_recipient_domain"),
    ("need fully-qualified address", "Sender address", "reject_non_fqdn_sender"),
    ("need fully-qualified address", "Recipient address", "reject_non_fqdn_recipient"),
    ("Improper use of SMTP command pipelining", "", "reject_unauth_pipelining"),
    ("Sender address rejected: not logged in", "", "reject_sender_login_mismatch"),
    ("Server configuration error", "", "server configuration error"),
    ("Temporary lookup failure", "", "table lookup failure"),
    ("too many errors", "", "hard error limit"),
    ("blocked automatically", "", "auto_block"),  # auto_block_* (report/blocks.py)
    ("Message size exceeds fixed limit", "", "message_size_limit"),
)
_ACCESS = {"Client host": "check_client_access", "Helo command": "check_helo_access",
           "Sender address": "check_sender_access", "Recipient address": "check_recipient_access",
           "Data command": "smtpd_data_restrictions", "End-of-data": "smtpd_end_of_data_restrictions",
           "Etrn command": "check_etrn_access"}


class Reject(NamedTuple):
    """One `reject:` line taken apart."""

    command: str
    client: str  # name[addr]
    addr: str
    code: str
    stage: str
    reason: str
    restriction: str
    sender: str | None
    recipient: str | None


Known = tuple[str, str, str]  # (stage, reason, restriction)
_ADDRESS = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_CACHE: dict[str, Known] = {}  # reply text without the leading <address> → Known


def fields(text: str) -> tuple[str, str, str, str, Known, str, int] | None:
    """(command, name[addr], addr, code, Known, rest, cut) of the part after `reject: `:
    `RCPT from name[addr]: 554 5.7.1 <x>: Recipient address rejected: why; from=<s> to=<r>
    proto=ESMTP helo=<h>`; `rest[cut:]` holds from=/to=. String operations and a cache, not a
    regex: this runs for every reject of a million-line log."""
    sp = text.find(" from ")
    b = text.find("[", sp)
    e = text.find("]", b)
    c = text.find(": ", e)
    if sp < 0 or b < 0 or e < 0 or c < 0 or not text[c + 2:c + 5].isdigit():
        return None
    rest = text[c + 6:]
    if rest[1:2] == "." and rest[:1].isdigit():  # the DSN
        rest = rest[rest.find(" ") + 1:]
    cut = rest.rfind("; from=<")
    if cut < 0:
        cut = rest.rfind("; to=<")
        if cut < 0:
            cut = rest.rfind("; proto=")
    reply = rest[:cut] if cut >= 0 else rest.rstrip("\n")
    if reply[:1] == "<":
        k = reply.find(">: ")
        if k > 0:
            reply = reply[k + 3:]
    if "[" in reply:  # the client's address in the text (DNS lists, unknown hostname):
        reply = _ADDRESS.sub("[ADDR]", reply)  # one reason, not one per client
    known = _CACHE.get(reply)
    if known is None:
        known = _known(reply)
        if len(_CACHE) > 10_000:
            _CACHE.clear()
        _CACHE[reply] = known
    return text[:sp], text[sp + 6:e + 1], text[b + 1:e], text[c + 2:c + 5], known, rest, cut


def _known(reply: str) -> Known:
    stage, reason = classify(reply)
    return stage, reason, restriction(stage, reason)


def recipient(rest: str, cut: int) -> str | None:
    t = rest.find(" to=<", cut) if cut >= 0 else -1
    return rest[t + 5:rest.find(">", t)] if t >= 0 else None


def parse_reject(text: str) -> Reject | None:
    """The part after `reject: ` taken apart (see fields())."""
    found = fields(text)
    if found is None:
        return None
    command, client, addr, code, known, rest, cut = found
    f = rest.find("from=<", cut) if cut >= 0 else -1
    sender = rest[f + 6:rest.find(">", f)] if f >= 0 else None
    return Reject(command, client, addr, code, *known, sender, recipient(rest, cut))


def classify(reply: str) -> tuple[str, str]:
    """(stage, reason) of a reject text: `Client host rejected: go away` → (Client host,
    go away); DNS lists → `blocked using LIST`; texts without a stage → (command, text)."""
    for stage in _STAGES:
        if reply.startswith(stage + " rejected: "):
            return stage, reply[len(stage) + 11:][:100]
    b = reply.find(" blocked using ")
    if b >= 0:
        stage = reply[reply.find("; ") + 2:b].split(" [", 1)[0] if "; " in reply[:b] else ""
        listed = reply[b + 15:].split(";", 1)[0]
        return stage or "Client host", f"blocked using {listed}"
    if reply.endswith("Relay access denied"):
        return "Recipient address", "Relay access denied"
    return "", reply[:100]


def restriction(stage: str, reason: str) -> str:
    for text, where, name in _RESTRICTIONS:
        if text in reason and (not where or where == stage):
            return name
    return _ACCESS.get(stage, "other")


