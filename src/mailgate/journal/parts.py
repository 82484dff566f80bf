"""A journal line read in parts, as `mailgate replay` reads it: the head (time, port, sizes)
by a pattern, `then` by its text (the same text comes again), the facts apart (the replay
keeps them as the key of an evaluation), and their DNS answers made only when a check asks
for one. What is read is what record.decode() reads of the whole line, and a line it
refuses is refused here too (RecordError)."""

from __future__ import annotations

import json
import re
from typing import Any

from mailgate.journal.record import (
    VERSION,
    Head,
    RecordError,
    Then,
    Transaction,
    add_rbl,
    check_answer,
    then_of,
    transaction,
)

Answers = dict[tuple[str, str], list[Any]]  # a record's DNS answers as the line has them

_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"  # JSON's grammar
_INT = r"(?:0|[1-9][0-9]*)"
# The head as encode() writes it; any other form (key order, spaces, escapes) goes to json.
_HEAD = re.compile(rf'\{{"v":{VERSION},"time":({_NUMBER})(?:,"queue_id":"([^"\\\x00-\x1f]*)")?'
                   rf'(?:,"port":({_INT}))?(?:,"size":({_INT}))?(?:,"message_size":({_INT}))?'
                   r',"then":')
_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def read_head(line: str, cut: int) -> Head:
    """The head of a line whose facts begin at `cut` (line.find(FACTS)), the values decode()
    takes from it; RecordError for a line that is not a record. `then` is its text, not
    checked here (decode_then() does)."""
    m = _HEAD.match(line, 0, cut)
    if m is not None:
        time, queue_id, port, size, message_size = m.groups()
        return Head(float(time), queue_id or "", int(port or 0), int(size or 0),
                    int(message_size) if message_size is not None else None,
                    line[m.end():cut])
    try:
        obj = json.loads(line[:cut] + "}")
        if not isinstance(obj, dict) or obj.get("v") != VERSION:
            raise RecordError(f"not a version {VERSION} journal record")
        return Head(float(obj["time"]), obj.get("queue_id", ""), int(obj.get("port", 0)),
                    int(obj.get("size", 0)), obj.get("message_size"), _DUMPS(obj["then"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"malformed journal record: {exc!r}") from None


def decode_then(text: str) -> Then:
    """`then` from its text (Head.then); RecordError if it is not one."""
    try:
        return then_of(json.loads(text))
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"malformed journal record: {exc!r}") from None


def decode_facts(facts: str, head: Head, then: Then, raw: Answers) -> Transaction:
    """The transaction of a line from its facts' text (record.facts_key()), its head and
    `then`, but its DNS answers, which go into `raw` as the line has them (checked as
    decode() checks them; record.decode_answer() makes one): most are never asked for.
    RecordError if the facts are not a record's."""
    try:
        f = json.loads("{" + facts[1:])["facts"]
        tx = transaction(f, head, then)
        for item in f.get("dns", ()):
            check_answer(item)
            raw[(item[0], item[1])] = item
        add_rbl(f, tx)
        return tx
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"malformed journal record: {exc!r}") from None
