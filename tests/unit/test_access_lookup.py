"""The access-table lookup order (spec §c.3 and the observed sessions B10-B12, D6, D7, D9)."""

from __future__ import annotations

from mailgate.maps.access import address_keys, host_keys
from mailgate.maps.addr_find import lookup_keys

# check_sender_access / check_recipient_access: smtpd_check.c check_mail_access's strategy
ACCESS = frozenset({"full", "noext", "domain", "localpart_at", "pdms"})


def test_host_keys_parents_and_literals() -> None:
    assert list(host_keys("a.b.Example.com")) == [
        ("a.b.example.com", False), ("b.example.com", True), ("example.com", True), ("com", True)]
    assert list(host_keys("a.example.com", parent_matches=False)) == [
        ("a.example.com", False), (".example.com", True), (".com", True)]
    assert list(host_keys("1.2.3.4")) == [("1.2.3.4", False)]  # D9: numeric HELO, exact only
    assert list(host_keys("[1.2.3.4]")) == [("[1.2.3.4]", False)]


def test_address_keys_ipv4_and_ipv6() -> None:
    assert [k for k, _ in address_keys("1.2.3.4")] == ["1.2.3.4", "1.2.3", "1.2", "1"]
    assert [k for k, _ in address_keys("2001:db8:0:2::9")] == [
        "2001:db8:0:2::9", "2001:db8:0:2:", "2001:db8:0:2", "2001:db8:0", "2001:db8", "2001"]
    assert next(k for k, _ in address_keys("::ffff:10.1.2.3")) == "10.1.2.3"


def test_email_keys_with_extension() -> None:
    def keys(address: str, delimiter: str = "", fixed: bool = True) -> list[str]:
        return [k for k, _ in lookup_keys(fixed, address, ACCESS, "external-first", delimiter)]

    assert keys("user+ext@sub.example.com", "+") == [
        "user+ext@sub.example.com", "user@sub.example.com", "sub.example.com", "example.com",
        "com", "user+ext@", "user@"]
    assert keys("user@example.com") == ["user@example.com", "example.com", "com", "user@"]
    assert keys("x@example.com", fixed=False) == ["x@example.com"]  # D7: regexp sees one key
