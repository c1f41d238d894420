"""Self-test of the OpenLDAP fixture (tests/ldap_server.py), with ldap3 directly."""

from __future__ import annotations

import socket
import ssl
import time

import ldap3
import pytest
from ldap3.core.exceptions import (
    LDAPBindError,
    LDAPInvalidCredentialsResult,
    LDAPPasswordIsMandatoryError,
    LDAPSocketOpenError,
    LDAPStartTLSError,
)

from tests import ldap_server as seed
from tests.ldap_server import Slapd


def connect(
    server: Slapd, user: str, password: str, *, url: str | None = None, **kwargs: object
) -> ldap3.Connection:
    return ldap3.Connection(
        ldap3.Server(url or server.url, connect_timeout=2, get_info=ldap3.NONE, **kwargs),
        user=user,
        password=password,
        auto_bind=ldap3.AUTO_BIND_NO_TLS,
        raise_exceptions=True,
        receive_timeout=5,
    )


def ber_simple_bind(dn: str, password: str) -> bytes:
    """A raw LDAPv3 simple BindRequest (message 1), for what ldap3 refuses to send."""

    def tlv(tag: int, value: bytes) -> bytes:
        assert len(value) < 128
        return bytes([tag, len(value)]) + value

    body = tlv(0x02, b"\x03") + tlv(0x04, dn.encode()) + tlv(0x80, password.encode())
    return tlv(0x30, tlv(0x02, b"\x01") + tlv(0x60, body))


def bind_result_code(server: Slapd, dn: str, password: str) -> int:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(ber_simple_bind(dn, password))
        response = s.recv(512)
    # 30 LL 02 01 01 61 LL 0a 01 <resultCode>
    assert response[5] == 0x61, response
    return response[9]


@pytest.mark.parametrize("user", seed.EXAMPLE_USERS + seed.CORP_USERS, ids=lambda u: u.uid)
def test_every_seed_user_binds_with_their_password(slapd_up: Slapd, user: seed.SeedUser) -> None:
    conn = connect(slapd_up, user.dn, user.password)
    assert conn.extend.standard.who_am_i() == f"dn:{user.dn}"
    conn.unbind()


def test_wrong_password_fails(slapd_up: Slapd) -> None:
    with pytest.raises(LDAPInvalidCredentialsResult):
        connect(slapd_up, seed.ALICE.dn, seed.BOB.password)
    with pytest.raises(LDAPInvalidCredentialsResult):
        connect(slapd_up, f"uid=nobody,{seed.EXAMPLE_ENG_DN}", "whatever")


def test_empty_password_is_an_unauthenticated_bind_that_succeeds(slapd_up: Slapd) -> None:
    with pytest.raises(LDAPPasswordIsMandatoryError):  # ldap3 refuses to send it
        connect(slapd_up, seed.ALICE.dn, "")
    assert bind_result_code(slapd_up, seed.ALICE.dn, "") == 0  # ... the server accepts it
    assert bind_result_code(slapd_up, seed.ALICE.dn, "wrong") == 49
    assert bind_result_code(slapd_up, seed.ALICE.dn, seed.ALICE.password) == 0


def test_anonymous_clients_cannot_search(slapd_up: Slapd) -> None:
    conn = ldap3.Connection(ldap3.Server(slapd_up.url, get_info=ldap3.NONE), auto_bind=True)
    conn.search(seed.EXAMPLE_BASE, "(uid=alice)", attributes=["uid"])
    assert conn.entries == []
    conn.unbind()


def test_users_and_enabled_flags(slapd_up: Slapd) -> None:
    conn = connect(slapd_up, seed.EXAMPLE_READER_DN, seed.READER_PASSWORD)
    conn.search(
        seed.EXAMPLE_PEOPLE_DN,
        "(objectClass=inetOrgPerson)",
        attributes=["uid", "cn", "mail", "shadowFlag", "uidNumber", "userPassword", "entryUUID"],
    )
    found = {e.uid.value: e for e in conn.entries}
    assert set(found) == {u.uid for u in seed.EXAMPLE_USERS}
    for user in seed.EXAMPLE_USERS:
        entry = found[user.uid]
        assert entry.entry_dn == user.dn
        assert entry.cn.value == user.cn
        assert entry.mail.value == user.mail
        assert int(entry.uidNumber.value) == user.uid_number  # str: get_info=NONE
        assert entry.shadowFlag.value == (None if user.flag is None else str(user.flag))
        assert entry.userPassword.value is None  # not readable by other users
        assert len(entry.entryUUID.value) == 36
        flag = user.flag if user.flag is not None else 0
        assert (flag & seed.EXAMPLE_ENABLED_MASK != seed.EXAMPLE_ENABLED_MASK) == user.enabled
    # Nested OUs: one-level search of ou=people finds only the sub-OUs.
    conn.search(seed.EXAMPLE_PEOPLE_DN, "(objectClass=*)", ldap3.LEVEL, attributes=["ou"])
    assert sorted(e.entry_dn for e in conn.entries) == [seed.EXAMPLE_ENG_DN, seed.EXAMPLE_OPS_DN]
    conn.unbind()


def test_groups_of_both_kinds(slapd_up: Slapd) -> None:
    conn = connect(slapd_up, seed.ALICE.dn, seed.ALICE.password)
    conn.search(seed.DEVELOPERS.dn, "(objectClass=groupOfNames)", ldap3.BASE, attributes=["member"])
    assert sorted(conn.entries[0].member.values) == sorted([seed.ALICE.dn, seed.DAVE.dn])
    conn.search(
        seed.EXAMPLE_GROUPS_DN,
        f"(&(objectClass=posixGroup)(memberUid={seed.BOB.uid}))",
        attributes=["cn", "gidNumber"],
    )
    assert [(e.cn.value, int(e.gidNumber.value)) for e in conn.entries] == [
        (seed.OPERATORS.cn, seed.OPERATORS.gid_number)
    ]
    conn.search(
        seed.EXAMPLE_GROUPS_DN, f"(member={seed.ALICE.dn})", attributes=["cn"]
    )  # reverse lookup, as a backend does for a user's groups
    assert [e.cn.value for e in conn.entries] == [seed.DEVELOPERS.cn]
    conn.unbind()


def test_paged_search_returns_all_bulk_users(slapd_up: Slapd) -> None:
    conn = connect(slapd_up, seed.EXAMPLE_READER_DN, seed.READER_PASSWORD)
    started = time.monotonic()
    entries = list(
        conn.extend.standard.paged_search(
            seed.BULK_DN,
            "(objectClass=inetOrgPerson)",
            attributes=["uid"],
            paged_size=500,
            generator=True,
        )
    )
    elapsed = time.monotonic() - started
    uids = {e["attributes"]["uid"][0] for e in entries if e["type"] == "searchResEntry"}
    assert len(uids) == seed.BULK_COUNT
    assert seed.bulk_uid(1) in uids and seed.bulk_uid(seed.BULK_COUNT) in uids
    assert elapsed < 10
    conn.unbind()
    bulk_user = connect(slapd_up, seed.bulk_dn(1), seed.bulk_password(1) or "")
    bulk_user.unbind()


def test_starttls_with_the_fixture_ca(slapd_up: Slapd) -> None:
    for url in (slapd_up.url, slapd_up.localhost_url):
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(slapd_up.ca_file))
        conn = ldap3.Connection(
            ldap3.Server(url, tls=tls, get_info=ldap3.NONE),
            user=seed.ALICE.dn,
            password=seed.ALICE.password,
            auto_bind=ldap3.AUTO_BIND_TLS_BEFORE_BIND,
            raise_exceptions=True,
        )
        assert conn.tls_started
        assert conn.extend.standard.who_am_i() == f"dn:{seed.ALICE.dn}"
        conn.unbind()


def test_starttls_with_another_ca_fails(slapd_up: Slapd) -> None:
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(slapd_up.other_ca_file))
    conn = ldap3.Connection(
        ldap3.Server(slapd_up.url, tls=tls, get_info=ldap3.NONE),
        user=seed.ALICE.dn,
        password=seed.ALICE.password,
        raise_exceptions=True,
    )
    conn.open()
    with pytest.raises(LDAPStartTLSError, match="CERTIFICATE_VERIFY_FAILED"):
        conn.start_tls()


def test_ldaps_port(slapd_up: Slapd) -> None:
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(slapd_up.ca_file))
    conn = connect(slapd_up, seed.ERIN.dn, seed.ERIN.password, url=slapd_up.ldaps_url, tls=tls)
    assert conn.server.ssl
    conn.unbind()
    bad = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(slapd_up.other_ca_file))
    with pytest.raises(LDAPSocketOpenError):
        connect(slapd_up, seed.ERIN.dn, seed.ERIN.password, url=slapd_up.ldaps_url, tls=bad)


def test_corp_base_ad_style(slapd_up: Slapd) -> None:
    conn = connect(slapd_up, seed.CORP_READER_DN, seed.READER_PASSWORD)
    conn.search(seed.CORP_USERS_DN, "(objectClass=inetOrgPerson)", attributes=["uid", "shadowFlag"])
    flags = {e.uid.value: int(e.shadowFlag.value) for e in conn.entries}
    assert flags == {u.uid: u.flag for u in seed.CORP_USERS}
    for user in seed.CORP_USERS:
        enabled = flags[user.uid] & seed.CORP_ENABLED_MASK != seed.CORP_ENABLED_MASK
        assert enabled == user.enabled
    conn.search(seed.ADMINS.dn, "(objectClass=groupOfNames)", ldap3.BASE, attributes=["member"])
    assert conn.entries[0].member.values == [seed.ERIN.dn]
    # The two bases are separate databases: example.org's admin cannot write corp.
    conn.unbind()
    with pytest.raises(LDAPInvalidCredentialsResult):
        connect(slapd_up, seed.CORP_ADMIN_DN, "not-the-password")
    with pytest.raises(LDAPBindError):
        ldap3.Connection(
            ldap3.Server(slapd_up.url, get_info=ldap3.NONE),
            user=seed.ERIN.dn,
            password=seed.FRANK.password,
            auto_bind=True,
        )


def test_helpers_change_the_directory(slapd_up: Slapd) -> None:
    dn = f"uid=zoe,{seed.EXAMPLE_ENG_DN}"
    assert slapd_up.add_ldif(
        f"""
        dn: {dn}
        objectClass: inetOrgPerson
        objectClass: shadowAccount
        uid: zoe
        cn: Zoe
        sn: Zed
        userPassword: zoe-pw
        shadowFlag: 0
        """
    ) == [dn]
    try:
        connect(slapd_up, dn, "zoe-pw").unbind()
        slapd_up.replace(dn, "shadowFlag", 1)
        slapd_up.modify(dn, {"mail": [(ldap3.MODIFY_ADD, ["zoe@example.org"])]})
        conn = connect(slapd_up, seed.EXAMPLE_READER_DN, seed.READER_PASSWORD)
        conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["shadowFlag", "mail"])
        assert conn.entries[0].shadowFlag.value == "1"
        assert conn.entries[0].mail.value == "zoe@example.org"
        conn.unbind()
    finally:
        slapd_up.delete(dn)
    assert not slapd_up.exists(dn)
    assert slapd_up.exists(seed.ALICE.dn)
    with pytest.raises(LDAPInvalidCredentialsResult):
        connect(slapd_up, dn, "zoe-pw")

    corp_ou = f"ou=temp,{seed.CORP_BASE}"
    slapd_up.add(corp_ou, {"objectClass": ["organizationalUnit"], "ou": "temp"})
    slapd_up.add(f"cn=x,{corp_ou}", {"objectClass": ["organizationalRole"], "cn": "x"})
    slapd_up.delete(corp_ou, recursive=True)
    assert not slapd_up.exists(corp_ou)


def test_stop_and_start_keep_port_and_data(slapd_up: Slapd) -> None:
    dn = f"uid=restart-me,{seed.EXAMPLE_OPS_DN}"
    slapd_up.add(
        dn,
        {"objectClass": ["inetOrgPerson"], "uid": "restart-me", "cn": "R", "sn": "R"},
    )
    port = slapd_up.port
    try:
        slapd_up.stop()
        assert not slapd_up.is_running()
        with pytest.raises(LDAPSocketOpenError):
            connect(slapd_up, seed.ALICE.dn, seed.ALICE.password)
        slapd_up.start()
        assert slapd_up.is_running()
        assert slapd_up.port == port
        connect(slapd_up, seed.ALICE.dn, seed.ALICE.password).unbind()
        assert slapd_up.exists(dn)
        with slapd_up.stopped():
            assert not slapd_up.is_running()
        assert slapd_up.is_running()
    finally:
        slapd_up.delete(dn)


def test_a_connection_open_across_a_restart_fails_then_a_new_one_works(slapd_up: Slapd) -> None:
    conn = connect(slapd_up, seed.ALICE.dn, seed.ALICE.password)
    slapd_up.restart()
    with pytest.raises(ldap3.core.exceptions.LDAPException):
        conn.search(seed.ALICE.dn, "(objectClass=*)", ldap3.BASE)
    connect(slapd_up, seed.ALICE.dn, seed.ALICE.password).unbind()
