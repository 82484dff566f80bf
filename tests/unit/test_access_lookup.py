"""The access-table lookup order (spec §c.3 and the observed sessions B10-B12, D6, D7, D9)."""

from __future__ import annotations

from mailgate.maps import default_registry
from mailgate.maps.access import (
    address_keys,
    email_keys,
    find_client,
    find_email,
    find_host,
    host_keys,
)


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
    assert list(email_keys("user+ext@sub.example.com", "+")) == [
        ("user+ext@sub.example.com", False), ("user@sub.example.com", True),
        ("sub.example.com", True), ("example.com", True), ("com", True),
        ("user+ext@", True), ("user@", True)]
    assert list(email_keys("user@example.com")) == [
        ("user@example.com", False), ("example.com", True), ("com", True), ("user@", True)]


def test_observed_access_table_semantics() -> None:
    registry = default_registry()
    table = registry.open("inline:{{sub.parent.example=OK}, {parent.example=REJECT parent}, "
                          "{user@=REJECT user-at}, {full@user.example=OK}, "
                          "{user.example=REJECT domain}, {<>=REJECT null}, {dunno.com=DUNNO}, "
                          "{1.2.3=REJECT net}, {2001:db8:0:2:=REJECT v6}}")
    assert find_email(table, "x@a.sub.parent.example").value == "OK"  # type: ignore[union-attr]
    assert find_email(table, "x@parent.example").value == "REJECT parent"  # type: ignore[union-attr]
    assert find_email(table, "full@user.example").value == "OK"  # type: ignore[union-attr]
    assert find_email(table, "other@user.example").value == "REJECT domain"  # type: ignore[union-attr]
    assert find_email(table, "user@nowhere.example").value == "REJECT user-at"  # type: ignore[union-attr]
    assert find_email(table, "").value == "REJECT null"  # type: ignore[union-attr]
    # a DUNNO found for the name ends the search: the address is not consulted
    assert find_client(table, "bar.dunno.com", "1.2.3.4").value == "DUNNO"  # type: ignore[union-attr]
    assert find_client(table, "unknown", "1.2.3.4").key == "1.2.3"  # type: ignore[union-attr]
    assert find_client(table, "x", "2001:db8:0:2::9").value == "REJECT v6"  # type: ignore[union-attr]
    assert find_host(table, "nothing.example") is None


def test_pattern_tables_see_only_full_keys() -> None:
    registry = default_registry()
    table = registry.open("regexp:{{/^example\\.com$/ REJECT whole}, {/^user@$/ REJECT at}}")
    assert find_email(table, "x@example.com") is None  # D7: no partial lookups
    assert find_email(table, "user@") is not None
