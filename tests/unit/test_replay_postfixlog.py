"""Transactions rebuilt from Postfix log lines: refused recipients (grouped per transaction,
taken by the message that follows), accepted messages from client=/qmgr/delivery lines,
what the log does not say (`missing`), and the client port of smtpd_client_port_logging."""

from __future__ import annotations

from datetime import datetime

from mailgate.engine.context import NAME_OK, NAME_PERM
from mailgate.journal.record import Transaction
from mailgate.replay.postfixlog import PostfixLog, client_of
from mailgate.report.logline import Clock

H = "Dec  3 10:00:0{} mx postfix/{}: "


def parse(*lines: tuple[int, str, str]) -> list[Transaction]:
    log = PostfixLog(Clock(datetime(2026, 12, 31)))
    found = log.consume([H.format(second, program) + text for second, program, text in lines])
    return found + log.done()


REJECT = ("{qid}: reject: RCPT from {client}: {reply}; from=<s@sender.example> to=<{rcpt}> "
          "proto=ESMTP helo=<mx.sender.example>")


def reject(qid: str, rcpt: str, reply: str = "550 5.1.1 <{rcpt}>: Recipient address "
           "rejected: User unknown in virtual mailbox table",
           client: str = "mx.sender.example[192.0.2.1]") -> str:
    return REJECT.format(qid=qid, client=client, rcpt=rcpt, reply=reply.format(rcpt=rcpt))


def test_a_message_takes_the_recipients_refused_before_it() -> None:
    found = parse(
        (1, "smtpd[7]", "connect from mx.sender.example[192.0.2.1]"),
        (1, "smtpd[7]", "Anonymous TLS connection established from mx.sender.example"
                        "[192.0.2.1]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"),
        (2, "smtpd[7]", reject("NOQUEUE", "nobody@example.test")),
        (3, "smtpd[7]", "4F2A1B3C5D: client=mx.sender.example[192.0.2.1]"),
        (3, "smtpd[7]", reject("4F2A1B3C5D", "x@other.example",
                               "454 4.7.1 <{rcpt}>: Relay access denied")),
        (4, "cleanup[8]", "4F2A1B3C5D: message-id=<1@sender.example>"),
        (4, "qmgr[9]", "4F2A1B3C5D: from=<s@sender.example>, size=1234, nrcpt=2 (queue active)"),
        (5, "virtual[10]", "4F2A1B3C5D: to=<alice@example.test>, relay=virtual, delay=1, "
                           "status=sent (delivered to maildir)"),
        (5, "virtual[10]", "4F2A1B3C5D: to=<al@example.test>, orig_to=<bob@example.test>, "
                           "relay=virtual, delay=1, status=sent (delivered to maildir)"),
        (6, "qmgr[9]", "4F2A1B3C5D: removed"),
        (7, "smtpd[7]", "disconnect from mx.sender.example[192.0.2.1] ehlo=1 mail=1 rcpt=2/4"))
    assert len(found) == 1
    tx = found[0]
    assert tx.recipients == ["nobody@example.test", "alice@example.test", "bob@example.test",
                             "x@other.example"]
    assert [o.code for o in tx.then.rcpt] == [550, 250, 250, 454]
    assert tx.then.rcpt[0].rule is not None
    assert tx.then.rcpt[0].rule.restriction == "reject_unlisted_recipient"
    assert (tx.sender, tx.helo, tx.message_size, tx.data, tx.end_of_data) == (
        "s@sender.example", "mx.sender.example", 1234, True, True)
    assert tx.encryption == ("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256)
    # HELO from the reject lines, a name, TLS known; the recipients' order and count not
    assert tx.missing == {"recipient_order", "recipient_count"}
    assert tx.time == datetime(2026, 12, 3, 10, 0, 2).timestamp()


def test_an_accepted_message_alone_lacks_its_helo() -> None:
    found = parse(
        (1, "smtpd[7]", "ABCDEF1234: client=unknown[192.0.2.9], sasl_method=PLAIN, "
                        "sasl_username=u"),
        (2, "qmgr[9]", "ABCDEF1234: from=<>, size=500, nrcpt=1 (queue active)"),
        (3, "virtual[10]", "ABCDEF1234: to=<alice@example.test>, relay=virtual, status=sent"),
        (4, "qmgr[9]", "ABCDEF1234: removed"))
    tx = found[0]
    assert (tx.sender, tx.recipients, tx.helo) == ("", ["alice@example.test"], None)
    assert (tx.sasl_method, tx.sasl_username) == ("PLAIN", "u")
    assert tx.missing == {"helo", "client_name_status", "tls", "recipient_count"}
    assert tx.client.name_status == NAME_PERM


def test_refused_recipients_of_one_transaction_stay_together() -> None:
    found = parse(
        (1, "smtpd[7]", reject("NOQUEUE", "a@example.test")),
        (1, "smtpd[7]", reject("NOQUEUE", "b@example.test")),
        (2, "smtpd[7]", "NOQUEUE: reject: MAIL from mx.sender.example[192.0.2.1]: 554 5.7.1 "
                        "<x@bad.example>: Sender address rejected: go away; "
                        "from=<x@bad.example> proto=SMTP helo=<mx.sender.example>"),
        (3, "smtpd[8]", reject("NOQUEUE", "c@example.test",
                               client="unknown[192.0.2.2]:4567")))
    assert [tx.recipients for tx in found] == [["a@example.test", "b@example.test"], [],
                                               ["c@example.test"]]
    assert found[1].then.mail is not None and found[1].then.mail.code == 554
    assert found[1].protocol == "SMTP"
    assert found[2].client.port == 4567 and found[2].missing == {"client_name_status", "tls",
                                                                 "recipient_count"}


def test_a_message_never_sent_is_not_taken_as_sent() -> None:
    found = parse(
        (1, "smtpd[7]", "connect from mx.sender.example[192.0.2.1]"),
        (1, "smtpd[7]", "improper command pipelining after MAIL from mx.sender.example"
                        "[192.0.2.1]: RCPT TO:<a@example.test>"),
        (2, "smtpd[7]", "AAAAA11111: client=mx.sender.example[192.0.2.1]"),
        (2, "smtpd[7]", reject("AAAAA11111", "b@example.test")),
        (3, "smtpd[7]", "disconnect from mx.sender.example[192.0.2.1]"))
    tx = found[0]
    assert tx.recipients == ["b@example.test"] and not tx.data
    assert tx.then.data is None and tx.pipelining_from == 0
    assert tx.sender == "s@sender.example" and tx.helo == "mx.sender.example"


def test_client_names() -> None:
    client = client_of("mail.example.org[2001:db8::1]:25")
    assert (client.name, client.addr, client.port, client.name_status) == (
        "mail.example.org", "2001:db8::1", 25, NAME_OK)
    assert client.reverse_name == "mail.example.org"


def test_a_helo_refused_then_gives_the_name_to_the_reject_lines_after_it() -> None:
    """smtpd_delay_reject = no: `reject: EHLO` logs the name; the RCPT lines after it show
    no helo= (smtpd has none): their transaction takes the refused name and refusal."""
    found = parse(
        (1, "smtpd[7]", "NOQUEUE: reject: EHLO from mx.sender.example[192.0.2.1]: 450 4.7.1 "
                        "<bad.example>: Helo command rejected: later; proto=SMTP "
                        "helo=<bad.example>"),
        (2, "smtpd[7]", "NOQUEUE: reject: RCPT from mx.sender.example[192.0.2.1]: 550 5.1.1 "
                        "<c@example.test>: Recipient address rejected: no; "
                        "from=<s@sender.example> to=<c@example.test> proto=SMTP"))
    (tx,) = found
    assert tx.helo == "bad.example" and tx.then.helo is not None
    assert (tx.then.helo.code, tx.protocol) == (450, "SMTP")
