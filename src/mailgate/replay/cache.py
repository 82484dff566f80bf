"""What a replay keeps between records: evaluations by a record's facts, and `then` decoded
by its text; in generations of a fixed size, so that memory is bounded whatever the input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from mailgate.journal.parts import Answers, decode_facts
from mailgate.journal.record import Head, Then, Transaction
from mailgate.replay.simulate import Now
from mailgate.replay.summary import Effect

K = TypeVar("K")
V = TypeVar("V")
EFFECTS = 8  # `then` texts kept per facts (one, nearly always)


class Generations(Generic[K, V]):
    """A mapping of at most 2 x `size` entries: when the newer generation is full the older
    one is dropped; an entry found in the older one is kept again in the newer. What is
    used keeps coming back (an LRU's effect, without its bookkeeping)."""

    __slots__ = ("newer", "older", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.newer: dict[K, V] = {}
        self.older: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        found = self.newer.get(key)
        if found is None:
            found = self.older.get(key)
            if found is not None:
                self.put(key, found)
        return found

    def put(self, key: K, value: V) -> None:
        if len(self.newer) >= self.size:
            self.older, self.newer = self.newer, {}
        self.newer[key] = value

    def pop(self, key: K) -> V | None:
        found = self.newer.pop(key, None)
        older = self.older.pop(key, None)
        return found if found is not None else older


class Evaluations(Generic[V]):
    """Evaluations by the facts' text. A new one is on probation; found again, it moves to
    the kept ones, which facts seen once (most spam: a new client each time) never reach,
    so that they do not push out the facts that come again and again (a segmented LRU's
    effect)."""

    __slots__ = ("kept", "probation")

    def __init__(self, probation: int, kept: int) -> None:
        self.probation: Generations[str, V] = Generations(probation)
        self.kept: Generations[str, V] = Generations(kept)

    def get(self, facts: str) -> V | None:
        found = self.kept.get(facts)
        if found is None:
            found = self.probation.pop(facts)
            if found is not None:
                self.kept.put(facts, found)
        return found

    def put(self, facts: str, value: V) -> None:
        self.probation.put(facts, value)


@dataclass(slots=True)
class Known:
    """The evaluation of a record's facts: the answers now for what the simulation read of
    its `then` (`bits`, simulate.then_key), and what the record added to the counts
    (`done`, for its `then` text); the same for other `then`s of the same facts (rare)."""

    bits: tuple[bool, bool, bool]
    then: str
    done: Effect
    effects: dict[str, Effect] | None = None
    nows: dict[tuple[bool, bool, bool], Sequence[Now]] | None = None

    def effect(self, then: str) -> Effect | None:
        if then == self.then:
            return self.done
        return self.effects.get(then) if self.effects is not None else None

    def now(self, bits: tuple[bool, bool, bool]) -> Sequence[Now] | None:
        if bits == self.bits:
            return self.done.now
        return self.nows.get(bits) if self.nows is not None else None

    def keep(self, then: str, done: Effect) -> None:
        if self.effects is None or len(self.effects) >= EFFECTS:
            self.effects = {}
        self.effects[then] = done

    def remember(self, bits: tuple[bool, bool, bool], now: Sequence[Now]) -> None:
        if self.nows is None:
            self.nows = {}
        self.nows[bits] = now


class Line:
    """A journal line read: its head, `then` and facts' text; the evaluation of the same
    facts if known, else (and when asked for) its transaction, whose DNS answers are in
    `raw` as the line has them."""

    __slots__ = ("facts", "head", "known", "raw", "then", "tx")

    def __init__(self, head: Head, then: Then, facts: str) -> None:
        self.head, self.then, self.facts = head, then, facts
        self.known: Known | None = None
        self.tx: Transaction | None = None
        self.raw: Answers = {}

    def transaction(self) -> Transaction:
        if self.tx is None:
            self.tx = decode_facts(self.facts, self.head, self.then, self.raw)
        return self.tx
