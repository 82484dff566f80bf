"""The `mailgate` command: serve, policyd, postconf, postmap, check, lint, replay."""

from __future__ import annotations

import argparse
import sys

from mailgate import __version__
from mailgate.config.config import Config
from mailgate.errors import ConfigError, MailgateError


def _load(args: argparse.Namespace, demo: bool) -> Config:
    from mailgate.app import DEMO_MAIN_CF

    base = DEMO_MAIN_CF if demo and args.config_dir is None else None
    return Config.load(args.config_dir, args.override, base_text=base)


def cmd_serve(args: argparse.Namespace) -> int:
    from mailgate.serve import run

    return run(_load(args, demo=True), reload=lambda: _load(args, demo=True))


def cmd_control(args: argparse.Namespace) -> int:
    """start, start-fg, stop, abort, reload, status (postfix(1)'s commands)."""
    from mailgate import control

    argv = (["-c", args.config_dir] if args.config_dir else []) + \
        [item for override in args.override for item in ("-o", override)]
    if args.command == "start-fg":
        return control.start_fg(argv)
    cfg = _load(args, demo=True)
    if args.command == "start":
        return control.start(argv, cfg)
    action = {"stop": control.stop, "abort": control.abort, "reload": control.reload,
              "status": control.status}[args.command]
    return action(cfg)


def cmd_policyd(args: argparse.Namespace) -> int:
    from mailgate.policyd.daemon import run

    return run(_load(args, demo=False))


def cmd_queue(args: argparse.Namespace) -> int:
    from mailgate.maillog import MailLog
    from mailgate.queue import commands
    from mailgate.queue.store import QueueStore

    cfg = _load(args, demo=True)
    store = QueueStore(cfg.get_str("queue_directory"))
    if args.action == "list":
        return commands.list_queue(store, sys.stdout, args.json)
    if args.action == "flush":
        return commands.flush(store)
    if not args.ids:
        print("mailgate queue: need a queue ID or ALL", file=sys.stderr)
        return 2
    log = MailLog.from_config(cfg)
    try:
        return commands.change(store, log, args.action, args.ids)
    finally:
        log.close()


def cmd_block(args: argparse.Namespace) -> int:
    """`mailgate block list|add|delete [ADDRESS|NETWORK]`: automatic blocks (docs/blocks.md)."""
    from mailgate.block import run

    return run(_load(args, demo=True), args.action, getattr(args, "target", None),
               getattr(args, "time", None), getattr(args, "json", False), sys.stdout,
               sys.stderr)


def cmd_postlog(args: argparse.Namespace) -> int:
    """`mailgate postlog reopen`: the running server reopens maillog_file (log rotation)."""
    import signal
    from pathlib import Path

    from mailgate.queue.commands import signal_server

    cfg = _load(args, demo=True)
    if signal_server(Path(cfg.get_str("queue_directory")), signal.SIGUSR1):
        return 0
    print("mailgate postlog: warning: no running server", file=sys.stderr)
    return 1


def cmd_postconf(args: argparse.Namespace) -> int:
    if args.M or args.P:
        return _postconf_master(args)
    cfg = _load(args, demo=False)
    mode = "n" if args.n else "d" if args.d else ""
    try:
        lines = cfg.postconf_lines(mode, args.names)
    except ConfigError as exc:
        print(f"mailgate/postconf: warning: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def _postconf_master(args: argparse.Namespace) -> int:
    """`postconf -M` / `-P` (with `-f`): master.cf entries or their `-o` parameters."""
    from mailgate.config.mastercf import load_master_cf, unused_overrides
    from mailgate.config.postconf_master import show_entries, show_parameters

    if args.config_dir is None:
        print("mailgate/postconf: fatal: -M and -P need -c DIR", file=sys.stderr)
        return 1
    try:
        cfg = _load(args, demo=False)
        master = load_master_cf(args.config_dir)
        if master is None:
            raise ConfigError(f"open {args.config_dir}/master.cf: No such file or directory")
        show = show_entries if args.M else show_parameters
        lines, warnings = show(master, args.names, fold=args.f)
    except ConfigError as exc:
        print(f"mailgate/postconf: fatal: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    for warning in [*master.warnings, *warnings, *unused_overrides(master, cfg)]:
        print(f"mailgate/postconf: warning: {warning}", file=sys.stderr)
    return 0


def cmd_postmap(args: argparse.Namespace) -> int:
    from mailgate.postmap import run

    return run(args.tables, args.q, args.s, not args.f, incremental=args.i, delete=args.d,
               config_dir=args.config_dir)


def cmd_check(args: argparse.Namespace) -> int:
    if args.script is not None:
        import asyncio

        from mailgate.check.driver import run_script, run_tokens

        with open(args.script, encoding="utf-8") if args.script != "-" else sys.stdin as f:
            lines = f.read().splitlines()
        if args.driver == "smtpd_token":
            return run_tokens(lines, sys.stdout)
        try:
            return asyncio.run(run_script(lines, sys.stdout, tuple(args.dns_server or ())))
        except ValueError as exc:  # a malformed --dns-server
            print(f"mailgate check: {exc}", file=sys.stderr)
            return 2
    from mailgate.check.admin import run

    return run(_load(args, demo=False), args)


def cmd_lint(args: argparse.Namespace) -> int:
    from mailgate.lint.command import run

    return run(args.config_dir, args.json, sys.stdout)


def cmd_report(args: argparse.Namespace) -> int:
    from mailgate.report.command import run

    cfg = _load(args, demo=False) if args.config_dir or args.override else None
    return run(args.logs, args.since, args.until, args.html, args.top, args.attack_threshold,
               args.attack_spread, jobs=args.jobs, cfg=cfg)


def cmd_replay(args: argparse.Namespace) -> int:
    from mailgate.replay.command import run

    if args.config_dir is None:
        print("mailgate replay: give the configuration to try: -c DIR", file=sys.stderr)
        return 2
    return run(_load(args, demo=False), args.config_dir, args.inputs,
               postfix_log=args.postfix_log, since=args.since, until=args.until,
               html_path=args.html, json_out=args.json, live_dns=args.live_dns,
               jobs=args.jobs, top=args.top)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailgate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mailgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", dest="config_dir", metavar="DIR",
                       help="configuration directory holding main.cf")
        p.add_argument("-o", dest="override", action="append", default=[],
                       metavar="NAME=VALUE", help="override a main.cf parameter (repeatable)")

    serve = sub.add_parser("serve", help="run the SMTP server")
    common(serve)
    serve.set_defaults(func=cmd_serve)
    for name, text in (("start", "start the server in the background (pid file, like postfix "
                        "start)"), ("start-fg", "run the server in the foreground (systemd, "
                        "containers)"), ("stop", "stop: sessions may finish "
                        "(smtpd_shutdown_timeout)"), ("abort", "stop at once"),
                       ("reload", "read the configuration again; sessions keep theirs"),
                       ("status", "say whether the server runs (exit 0) or not (1)")):
        command = sub.add_parser(name, help=text)
        common(command)
        command.set_defaults(func=cmd_control)

    policyd = sub.add_parser("policyd", help="run the policy server for Postfix "
                             "(check_policy_service inet:HOST:PORT)")
    common(policyd)
    policyd.set_defaults(func=cmd_policyd)

    queue = sub.add_parser("queue", help="list and manage the mail queue (mailq, postqueue, "
                           "postsuper)")
    common(queue)
    queue.add_argument("action", choices=("list", "flush", "delete", "hold", "release",
                                          "requeue"))
    queue.add_argument("ids", nargs="*", metavar="ID", help="queue IDs, or ALL")
    queue.add_argument("--json", action="store_true", help="list: one JSON object per message")
    queue.set_defaults(func=cmd_queue)

    block = sub.add_parser("block", help="list, add or delete blocks of clients and "
                           "networks (auto_block_*)")
    actions = block.add_subparsers(dest="action", required=True)
    for name, text in (("list", "the blocks in force"), ("add", "block an address or "
                       "network"), ("delete", "lift a block, forget its counts")):
        action = actions.add_parser(name, help=text)
        common(action)
        if name == "list":
            action.add_argument("--json", action="store_true", help="one JSON object a block")
        else:
            action.add_argument("target", metavar="ADDRESS|NETWORK")
        if name == "add":
            action.add_argument("-t", dest="time", metavar="TIME",
                                help="how long (default $auto_block_time), e.g. 1h, 2d")
        action.set_defaults(func=cmd_block)

    postlog = sub.add_parser("postlog", help="postlog reopen: reopen maillog_file (rotation)")
    common(postlog)
    postlog.add_argument("action", choices=("reopen",))
    postlog.set_defaults(func=cmd_postlog)

    postconf = sub.add_parser("postconf", help="print parameters as postconf(1) does")
    common(postconf)
    group = postconf.add_mutually_exclusive_group()
    group.add_argument("-n", action="store_true", help="only parameters set in main.cf")
    group.add_argument("-d", action="store_true", help="built-in default values")
    group.add_argument("-M", action="store_true", help="master.cf entries [service[/type]]")
    group.add_argument("-P", action="store_true",
                       help="master.cf -o parameters [service[/type[/parameter]]]")
    postconf.add_argument("-f", action="store_true", help="fold long lines (with -M, -P)")
    postconf.add_argument("names", nargs="*")
    postconf.set_defaults(func=cmd_postconf)

    postmap = sub.add_parser("postmap", help="query or dump lookup tables as postmap(1) does")
    postmap.add_argument("-c", dest="config_dir", metavar="DIR")
    postmap.add_argument("-q", metavar="KEY", help="look up KEY ('-': keys from stdin)")
    postmap.add_argument("-s", action="store_true", help="dump the table")
    postmap.add_argument("-f", action="store_true", help="no case folding of keys")
    postmap.add_argument("-i", action="store_true", help="add `key value` lines from stdin")
    postmap.add_argument("-d", metavar="KEY", help="delete KEY")
    postmap.add_argument("tables", nargs="+", metavar="[type:]name")
    postmap.set_defaults(func=cmd_postmap)

    lint = sub.add_parser("lint", help="report configuration mistakes that let spam in or "
                          "keep mail out (main.cf, master.cf, tables)")
    lint.add_argument("-c", dest="config_dir", metavar="DIR",
                      help="configuration directory holding main.cf")
    lint.add_argument("--json", action="store_true", help="one JSON object per finding")
    lint.set_defaults(func=cmd_lint)

    report = sub.add_parser("report", help="summarize a mail log (pflogsumm's totals, rejects "
                            "by restriction, dictionary attacks; --html with charts)")
    common(report)  # -c DIR: with Redis, the blocks in force on every gateway are added
    report.add_argument("logs", nargs="*", metavar="LOG",
                        help="log files, plain or gzip'd ('-' or none: stdin)")
    report.add_argument("--since", metavar="DATE", help="from this time: YYYY-MM-DD[ HH:MM[:SS]]")
    report.add_argument("--until", metavar="DATE", help="before this time")
    report.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")
    report.add_argument("--top", type=int, default=10, metavar="N", help="rows in top lists")
    report.add_argument("--attack-threshold", type=int, default=5, metavar="N",
                        help="unknown-user rejects that make a dictionary attack (default 5)")
    report.add_argument("--attack-spread", type=int, default=3, metavar="N",
                        help="distinct recipients an attack must try (default 3)")
    report.add_argument("--jobs", type=int, default=0, metavar="N",
                        help="processes for large plain logs (default: one per core)")
    report.set_defaults(func=cmd_report)

    replay = sub.add_parser("replay", help="what a configuration would have answered to "
                            "recorded traffic (transaction_journal, or a Postfix log)")
    common(replay)
    replay.add_argument("inputs", nargs="+", metavar="JOURNAL",
                        help="journal files, plain or gzip'd ('-': stdin); Postfix logs "
                        "with --postfix-log")
    replay.add_argument("--postfix-log", action="store_true",
                        help="the inputs are Postfix-shaped mail logs")
    replay.add_argument("--since", metavar="DATE", help="from this time: YYYY-MM-DD[ HH:MM[:SS]]")
    replay.add_argument("--until", metavar="DATE", help="before this time")
    shown = replay.add_mutually_exclusive_group()
    shown.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")
    shown.add_argument("--json", action="store_true",
                       help="one JSON object per recipient instead of the report")
    replay.add_argument("--live-dns", action="store_true",
                        help="ask the DNS now instead of using the answers recorded then")
    replay.add_argument("--jobs", type=int, default=0, metavar="N",
                        help="processes (default: one per core)")
    replay.add_argument("--top", type=int, default=10, metavar="N", help="rows in top lists")
    replay.set_defaults(func=cmd_replay)

    check = sub.add_parser("check", help="run a transaction through the restriction lists")
    common(check)
    check.add_argument("--script", metavar="FILE",
                       help="run a Postfix smtpd_check test-driver script ('-': stdin)")
    check.add_argument("--driver", choices=("smtpd_check", "smtpd_token"),
                       default="smtpd_check", help="which Postfix test driver --script emulates")
    check.add_argument("--dns-server", action="append", metavar="HOST[:PORT]",
                       help="with --script: ask this DNS server (default: /etc/resolv.conf)")
    check.add_argument("--client-address", default="127.0.0.1")
    check.add_argument("--client-name", default="")
    check.add_argument("--reverse-client-name", default="")
    check.add_argument("--helo", default=None)
    check.add_argument("--sender", default=None)
    check.add_argument("--recipient", action="append", default=[])
    check.add_argument("--protocol", default="ESMTP")
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except MailgateError as exc:
        print(f"mailgate: fatal: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
