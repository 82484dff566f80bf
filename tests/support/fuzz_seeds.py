"""Valid inputs the fuzzers start from (one tuple per input kind); DNS replies built with
dnspython, so they are what a real resolver sends."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

SMTP_SEEDS: tuple[bytes, ...] = (
    b"EHLO client.example.test\r\n",
    b"HELO [192.0.2.1]\r\n",
    b"MAIL FROM:<alice@example.test> SIZE=1000 BODY=8BITMIME SMTPUTF8\r\n",
    b"RCPT TO:<@route.test,@b.test:bob@example.test> NOTIFY=SUCCESS ORCPT=rfc822;bob@x\r\n",
    b'MAIL FROM:<"a b\\"c"@example.test>\r\n',
    b"RCPT TO:<bob>\r\nRCPT TO:<postmaster>\r\nNOOP\r\nVRFY bob\r\nETRN example.test\r\n",
    b"XCLIENT NAME=x.test ADDR=192.0.2.9 HELO=[IPv6:::1]\r\nRSET\r\nQUIT\r\n",
    b"EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<b@c>\r\nBDAT 5 LAST\r\nhello",
    b"EHLO a\r\nBDAT 3\r\nabcBDAT 0 LAST\r\nQUIT\r\n",
    b"DATA\r\nSubject: x\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n",
    b"DATA\r\nline\n.\nstill data\r\n.\r\n",
    b"DATA\r\n" + b"x" * 2000 + b"\r\n.\r\nRSET\r\n",
)

POLICY_SEEDS: tuple[bytes, ...] = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\n"
    b"sender=a@example.test\nrecipient=b@example.test\n\n",
    b"request=smtpd_access_policy\r\nhelo_name=x\r\n\r\n",
    b"action=DUNNO\n\naction=REJECT no\n\n",
    b"a=1\nb==2\n=bad\nc\n\n",
)

LOG_SEEDS: tuple[bytes, ...] = (
    b"Nov 26 07:11:00 mx postfix/smtpd[42]: connect from unknown[192.0.2.1]\n"
    b"Nov 26 07:11:01 mx postfix/smtpd[42]: 4ABC: client=unknown[192.0.2.1]\n"
    b"Nov 26 07:11:02 mx postfix/qmgr[9]: 4ABC: from=<a@example.test>, size=300, nrcpt=1 "
    b"(queue active)\n"
    b"Nov 26 07:11:03 mx postfix/local[7]: 4ABC: to=<b@example.test>, relay=local, delay=0.1,"
    b" delays=0/0/0/0, dsn=2.0.0, status=sent (delivered)\n"
    b"Nov 26 07:11:04 mx postfix/qmgr[9]: 4ABC: removed\n",
    b"2026-11-26T07:11:00.123+00:00 mx mailgate/smtpd[42]: NOQUEUE: reject: RCPT from "
    b"unknown[192.0.2.1]: 550 5.1.1 <x@example.test>: Recipient address rejected: User unknown "
    b"in local recipient table; from=<a@b> to=<x@example.test> proto=ESMTP helo=<h>\n",
    b"Nov 26 07:11:00 mx postfix/smtpd[42]: NOQUEUE: reject: RCPT from x[192.0.2.1]: 554 5.7.1"
    b" Service unavailable; Client host [192.0.2.1] blocked using zen.example; from=<> "
    b"to=<r@e> proto=SMTP helo=<h>\n"
    b"Nov 26 07:11:00 mx postfix/smtpd[42]: NOQUEUE: reject_warning: RCPT from x[192.0.2.1]: "
    b"450 4.7.1 <h>: Helo command rejected: Host not found; proto=SMTP\n"
    b"Nov 26 07:11:00 mx postfix/cleanup[3]: 4ABC: reject: header Subject: x from x[1.2.3.4]; "
    b"from=<> to=<r@e>: 550 5.7.1 no\n"
    b"Nov 26 07:11:00 mx postfix/smtp[5]: 4ABC: to=<r@e>, relay=none, delay=1, delays=1/0/0/0,"
    b" dsn=4.4.1, status=deferred (connect)\n"
    b"Nov 26 07:11:00 mx postfix/smtpd[42]: warning: hostname x does not resolve\n",
)


def _reply(name: str, rdtype: str, texts: list[str], rcode: int = 0, tc: bool = False,
           authority: list[str] | None = None) -> bytes:
    query = dns.message.make_query(name, rdtype)
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    if tc:
        reply.flags |= dns.flags.TC
    if texts:
        reply.answer.append(dns.rrset.from_text(name, 300, "IN", rdtype, *texts))
    if authority:
        reply.authority.append(dns.rrset.from_text("example.test.", 60, "IN", "SOA", *authority))
    return reply.to_wire()


DNS_SEEDS: tuple[bytes, ...] = (
    _reply("mx.example.test.", "A", ["192.0.2.1", "192.0.2.2"]),
    _reply("mx.example.test.", "AAAA", ["2001:db8::1"]),
    _reply("example.test.", "MX", ["10 mx.example.test.", "0 ."]),
    _reply("example.test.", "NS", ["ns1.example.test."]),
    _reply("1.2.0.192.in-addr.arpa.", "PTR", ["host.example.test."]),
    _reply("www.example.test.", "CNAME", ["example.test."]),
    _reply("2.0.0.127.zen.example.", "TXT", ['"listed \\200 see http://x"', '"a" "b"']),
    _reply("none.example.test.", "A", [], rcode=dns.rcode.NXDOMAIN,
           authority=["ns. host. 1 2 3 4 300"]),
    _reply("big.example.test.", "TXT", [], tc=True),
)
