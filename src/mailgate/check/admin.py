"""`mailgate check` for administrators: one transaction through the configured lists, with
the reply of each stage and the restriction (and table entry) that decided it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable
from typing import TextIO

from mailgate.app import build_engine, build_resolver, interface_addresses
from mailgate.config.config import Config
from mailgate.config.settings import SmtpdSettings
from mailgate.engine.context import NAME_OK, CheckState, Client
from mailgate.engine.engine import Engine
from mailgate.engine.reply import Verdict
from mailgate.maps import MapOptions, default_registry


async def _stage(engine: Engine, st: CheckState, where: str, out: TextIO, ok: str,
                 run: Awaitable[Verdict]) -> bool:
    st.where = where
    st.trace = []
    err = (await run).reply
    out.write(f"{where}: {ok if err is None else err.line}\n")
    for line in st.trace:
        out.write(f"    {line}\n")
    st.trace = None
    return err is None


async def transaction(cfg: Config, args: argparse.Namespace, out: TextIO) -> int:
    registry = default_registry(MapOptions.from_config(cfg))
    smtpd = SmtpdSettings.from_config(cfg)

    def log(text: str) -> None:
        out.write(f"    log: {text}\n")

    local = interface_addresses(cfg, [a.host for a in smtpd.listen])
    resolver = build_resolver(cfg, registry, local, log)
    engine, _ = build_engine(cfg, registry, resolver, log, local)
    if args.client_name:
        name = args.client_name
        client = Client(name, args.client_address, 0, args.reverse_client_name or name,
                        NAME_OK)
    else:  # the name lookup smtpd makes at connect (and the DNS list queries it starts)
        client = await engine.connect(args.client_address, 0, smtpd.peername_lookup)
    st = CheckState(client, protocol=args.protocol)
    out.write(f"client {st.namaddr}, smtpd_delay_reject = {'yes' if smtpd.delay_reject else 'no'}"
              "\n")
    if not smtpd.delay_reject and not await _stage(
            engine, st, "CONNECT", out, f"220 {smtpd.banner}", engine.check_client(st)):
        return 1
    if args.helo is not None:
        if not smtpd.delay_reject and not await _stage(
                engine, st, "EHLO", out, f"250 {smtpd.myhostname}",
                engine.check_helo(st, args.helo)):
            return 1
        st.helo = args.helo
    sender = args.sender if args.sender is not None else ""
    if not smtpd.delay_reject and not await _stage(
            engine, st, "MAIL", out, "250 2.1.0 Ok", engine.check_mail(st, sender)):
        return 1
    st.sender = sender
    accepted = []
    for rcpt in args.recipient:
        if await _stage(engine, st, "RCPT", out, "250 2.1.5 Ok", engine.check_rcpt(st, rcpt)):
            accepted.append(rcpt)
            st.rcpt_count = len(accepted)
    if not accepted:
        out.write("DATA: 554 5.5.1 Error: no valid recipients\n" if args.recipient else "")
        return 1
    only = accepted[0] if len(accepted) == 1 else None
    if not await _stage(engine, st, "DATA", out, "354 End data with <CR><LF>.<CR><LF>",
                        engine.check_data(st, only)):
        return 1
    marks = st.marks
    ok = "250 2.0.0 Ok: queued" + (" (discarded)" if marks.discard else "") + \
        (" (on hold)" if marks.hold else "") + (f" (filter {marks.filter})" if marks.filter
                                              else "")
    return 0 if await _stage(engine, st, "END-OF-MESSAGE", out, ok,
                             engine.check_eod(st, only)) else 1


def run(cfg: Config, args: argparse.Namespace) -> int:
    if not args.recipient:
        print("mailgate check: give --recipient (or --script FILE)", file=sys.stderr)
        return 2
    return asyncio.run(transaction(cfg, args, sys.stdout))
