"""The policy delegation protocol (Postfix SMTPD_POLICY_README), sans-IO: `name=value` lines
ending with an empty line, both ways. Bytes in, requests or errors out; replies as bytes."""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE = 4096  # a longer attribute line is a protocol error
MAX_ATTRIBUTES = 1024  # per request


@dataclass(frozen=True, slots=True)
class Request:
    attrs: dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        return self.attrs.get(name, default)


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """A malformed request; the reader has skipped to the end of it (its empty line)."""

    why: str


class PolicyReader:
    """Feed bytes; get the complete requests (and errors) they finish. Lines end with LF
    (a CR before it is dropped); the first `=` separates name and value; an empty line ends
    a request; an attribute given twice keeps its last value, as Postfix's attr_scan."""

    __slots__ = ("_attrs", "_buf", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._attrs: dict[str, str] = {}
        self._error = ""

    def feed(self, data: bytes) -> list[Request | ProtocolError]:
        if (not self._buf and not self._attrs and not self._error and data[-2:] == b"\n\n"
                and data.find(b"\n\n") == len(data) - 2 and b"\r" not in data
                and data[:1] != b"\n"):
            return [_block(data[:-2])]  # the usual case: exactly one request
        self._buf += data
        out: list[Request | ProtocolError] = []
        if not self._attrs and not self._error:
            self._whole_requests(out)
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE + 1 and not self._error:  # +1: a CR to drop
                    self._error = f"line longer than {MAX_LINE} bytes"
                if self._error and len(self._buf) > 1:
                    # a line that is skipped anyway: keep one byte of it, so that its LF
                    # is not taken for the empty line that ends the request
                    self._buf[:] = b"x"
                return out
            line = bytes(self._buf[:end]).removesuffix(b"\r")
            del self._buf[:end + 1]
            if not line:
                if self._error:
                    out.append(ProtocolError(self._error))
                elif self._attrs:
                    out.append(Request(self._attrs))
                self._attrs, self._error = {}, ""
                continue
            self._line(line)

    def _whole_requests(self, out: list[Request | ProtocolError]) -> None:
        """The fast path: requests that are complete in the buffer, LF-only, parsed a block
        at a time. Anything else is left to the line-by-line path below."""
        buf = self._buf
        start = 0
        while True:
            while buf.startswith(b"\n", start):  # empty lines between requests
                start += 1
            end = buf.find(b"\n\n", start)
            if end < 0 or buf.find(b"\r", start, end) >= 0:
                break
            out.append(_block(bytes(buf[start:end])))
            start = end + 2
        if start:
            del buf[:start]

    def _line(self, line: bytes) -> None:
        if not self._error:
            self._error = _attribute(self._attrs, line)


def _attribute(attrs: dict[str, str], line: bytes) -> str:
    """Add one `name=value` line (without its LF and CR) to `attrs`; the error, or ""."""
    if len(line) > MAX_LINE:
        return f"line longer than {MAX_LINE} bytes"
    name, eq, value = line.partition(b"=")
    if not eq or not name:
        return f"malformed attribute line: {line[:80]!r}"
    if len(attrs) >= MAX_ATTRIBUTES and name.decode("utf-8", "replace") not in attrs:
        return f"more than {MAX_ATTRIBUTES} attributes"
    attrs[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return ""


def _block(block: bytes) -> Request | ProtocolError:
    """The lines of one request (without its empty line): the same result as the line path
    (`_attribute` for each line), only faster for the usual request."""
    lines = block.decode("utf-8", "replace").split("\n")
    try:
        attrs = dict(line.split("=", 1) for line in lines)
    except ValueError:  # a line without "="
        attrs = {}
    if (len(attrs) == len(lines) and "" not in attrs and len(lines) <= MAX_ATTRIBUTES
            and (len(block) <= MAX_LINE or max(map(len, block.split(b"\n"))) <= MAX_LINE)):
        return Request(attrs)
    attrs = {}
    for line in block.split(b"\n"):
        why = _attribute(attrs, line)
        if why:
            return ProtocolError(why)
    return Request(attrs)


def encode(attrs: dict[str, str]) -> bytes:
    """A request or reply: one `name=value` line each, then the empty line. Newlines in a
    value would end the request early; they become spaces."""
    return "".join(f"{k}={v.replace(chr(10), ' ').replace(chr(13), ' ')}\n"
                   for k, v in attrs.items()).encode("utf-8", "surrogateescape") + b"\n"


def reply(action: str) -> bytes:
    return encode({"action": action})
