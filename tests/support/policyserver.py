"""A scripted policy server for tests: answers Postfix policy requests from a rules file,
records every request, and misbehaves on demand (slow, closing, garbage, crashing).

Rules (JSON): {"rules": [[STATE, FIELD, VALUE, ACTION], ...], "default": ACTION}; the first
rule whose request field equals VALUE (STATE "*" = any) gives the ACTION. An action is the
reply's `action=` value, or one of:
  @sleep N      answer DUNNO after N seconds       @close     close without a reply
  @garbage      a reply without `action`           @noeq      a line `action` without `=`
  @partial      half a reply, then close           @crash     the process exits (status 3)
  @first:ACTION ACTION the first time this request key is seen, DUNNO later (for retries)
Run: python policyserver.py --rules F --record F [--port N] [--unix PATH]; prints "ready PORT".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys


class Script:
    def __init__(self, rules_path: str, record_path: str) -> None:
        self.rules_path = rules_path
        self.record = open(record_path, "a", encoding="utf-8")  # noqa: SIM115
        self.seen: set[str] = set()
        self.connections = 0

    def action(self, attrs: dict[str, str]) -> str:
        with open(self.rules_path, encoding="utf-8") as f:  # re-read: tests change it
            spec = json.load(f)
        for state, field, value, action in spec.get("rules", []):
            if state in ("*", attrs.get("protocol_state")) and attrs.get(field) == value:
                return str(action)
        return str(spec.get("default", "DUNNO"))

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                attrs: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if not line:
                        return
                    line = line.rstrip(b"\n")
                    if not line:
                        break
                    name, _, value = line.decode().partition("=")
                    attrs[name] = value
                self.record.write(json.dumps({"conn": conn, "attrs": attrs}) + "\n")
                self.record.flush()
                if not await self.answer(attrs, writer):
                    return
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def answer(self, attrs: dict[str, str], writer: asyncio.StreamWriter) -> bool:
        action = self.action(attrs)
        if action.startswith("@first:"):
            key = "|".join(attrs.get(k, "") for k in ("protocol_state", "client_address",
                                                       "sender", "recipient", "helo_name"))
            action = action[7:] if key not in self.seen else "DUNNO"
            self.seen.add(key)
        if action.startswith("@sleep "):
            await asyncio.sleep(float(action.split()[1]))
            action = "DUNNO"
        if action == "@close":
            return False
        if action == "@crash":
            self.record.close()
            os._exit(3)
        replies = {"@garbage": b"hello there\n\n", "@noeq": b"action\n\n",
                   "@partial": b"action=REJ"}
        writer.write(replies.get(action, b"action=" + action.encode() + b"\n\n"))
        await writer.drain()
        return action != "@partial"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--unix")
    args = parser.parse_args()
    script = Script(args.rules, args.record)
    if args.unix:
        server = await asyncio.start_unix_server(script.serve, args.unix)
        os.chmod(args.unix, 0o666)  # smtpd connects as mail_owner, as Postfix's smtpd does
        where = args.unix
    else:
        server = await asyncio.start_server(script.serve, "127.0.0.1", args.port)
        where = str(server.sockets[0].getsockname()[1])
    print(f"ready {where}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
