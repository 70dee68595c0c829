"""The result webhooks' rules: event ids, bodies, the signature, the targets allowed, the retries."""

from __future__ import annotations

import ipaddress
import itertools
import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.domain import result_hooks as hooks
from shared.domain.result_hooks import TargetRefused

DAY_MS = 24 * 3600 * 1000


# -- event ids and bodies -------------------------------------------------------------------------------------------


def test_an_event_id_is_the_type_and_subject_hashed():
    attempt = "65f1c0ffee0000000000abcd:r1:p0:d0"
    assert hooks.event_id("call.ended", attempt) == "evt_aa81e1813600a3f452540a87"   # sha256sum of "call.ended|..."
    assert hooks.event_id("call.ended", attempt) == hooks.event_id("call.ended", attempt)
    assert hooks.event_id("call.analyzed", attempt) != hooks.event_id("call.ended", attempt)


@given(st.sampled_from(hooks.EVENT_TYPES), st.text(min_size=1, max_size=80))
def test_event_ids_are_deterministic_and_shaped(kind, subject):
    first = hooks.event_id(kind, subject)
    assert first == hooks.event_id(kind, subject)
    assert first.startswith("evt_") and len(first) == 28 and int(first[4:], 16) >= 0


JOB = {"_id": "65f1c0ffee0000000000abcd", "batch_id": "65f1c0ffee0000000000b000", "account_id": "acme",
       "contact": {"name": "Ana Pérez", "phones": ["+56961234567"], "external_id": "debt-7"}, "status": "completed",
       "reason_code": None, "last_error": None, "finished_at": 1_767_225_600_000,
       "result": {"calls": 2, "talk_ms": 61_500, "charge": 120, "last_call_at": 1_767_225_590_000,
                  "last_outcome": "success", "last_attempt_id": "65f1c0ffee0000000000abcd:r1:p0:d1",
                  "analysis": {"call_successful": True, "call_summary": "agreed to pay"}}}


def test_contact_final_data_is_the_contact_result_with_iso_instants_and_ids():
    data = hooks.contact_final_data(JOB)
    assert data["job_id"] == JOB["_id"] and data["batch_id"] == JOB["batch_id"] and data["account_id"] == "acme"
    assert data["external_id"] == "debt-7" and data["name"] == "Ana Pérez"
    assert data["status"] == "completed" and data["final"] is True and data["calls"] == 2 and data["talk_s"] == 61.5
    assert data["finished_at"] == "2026-01-01T00:00:00.000Z" and data["last_call_at"] == "2025-12-31T23:59:50.000Z"
    assert data["analysis"] == {"call_successful": True, "call_summary": "agreed to pay"}
    assert data["analysis_pending"] is False
    assert "phones" not in data   # the numbers are the operator's own; the event names the contact by ids


ATTEMPT = {"_id": "65f1c0ffee0000000000abcd:r1:p0:d0", "job_id": "65f1c0ffee0000000000abcd",
           "batch_id": "65f1c0ffee0000000000b000", "account_id": "acme", "external_id": "debt-7",
           "to_number": "+56961234567", "call_id": "call_1", "outcome": "success", "started_at": 1_767_225_500_000,
           "ended_at": 1_767_225_561_500, "duration_ms": 61_500, "charge": 62,
           "analysis": {"call_successful": True}, "recording_url": "https://rec.example/1.wav", "call_cost": 12.5}


def test_call_event_data():
    ended = hooks.call_ended_data(ATTEMPT)
    assert ended == {"attempt_id": ATTEMPT["_id"], "job_id": ATTEMPT["job_id"], "batch_id": ATTEMPT["batch_id"],
                     "account_id": "acme", "external_id": "debt-7", "call_id": "call_1", "to_number": "+56961234567",
                     "outcome": "success", "started_at": "2025-12-31T23:58:20.000Z",
                     "ended_at": "2025-12-31T23:59:21.500Z", "duration_s": 61.5, "charge": 62}
    analyzed = hooks.call_analyzed_data(ATTEMPT)
    assert analyzed["analysis"] == {"call_successful": True} and analyzed["call_cost"] == 12.5
    assert analyzed["recording_url"] == "https://rec.example/1.wav" and analyzed["attempt_id"] == ATTEMPT["_id"]


def test_a_body_is_compact_json_with_id_type_iso_time_and_data():
    body = hooks.event_body("evt_x", "contact.final", 1_767_225_600_000, hooks.contact_final_data(JOB))
    parsed = json.loads(body)
    assert list(parsed) == ["id", "type", "created_at", "data"]
    assert parsed["id"] == "evt_x" and parsed["created_at"] == "2026-01-01T00:00:00.000Z"
    assert "Ana Pérez" in body and ", " not in body.split('"data"')[0]


def test_analysis_awaited_until_it_comes_or_the_wait_ends():
    pending = {**JOB, "result": {**JOB["result"], "analysis_pending": "a1"}}
    finished = JOB["finished_at"]
    assert hooks.analysis_awaited(pending, finished + 1000, 600_000)
    assert not hooks.analysis_awaited(pending, finished + 600_000, 600_000)
    assert not hooks.analysis_awaited(JOB, finished, 600_000)
    assert not hooks.analysis_awaited({**pending, "result": {"analysis_pending": None}}, finished, 600_000)


def test_subscribed_follows_the_events_listed():
    assert hooks.subscribed({"url": "https://x.example", "events": ["call.ended"]}, "call.ended")
    assert not hooks.subscribed({"url": "https://x.example", "events": ["call.ended"]}, "contact.final")
    assert hooks.subscribed({"url": "https://x.example"}, "contact.final")
    assert not hooks.subscribed(None, "contact.final")


# -- the signature ----------------------------------------------------------------------------------------------------


def test_the_signature_of_a_known_vector():
    # printf '%s' '1700000000.{"id":"evt_1","type":"call.ended"}' | openssl dgst -sha256 -hmac whsec_0123456789abcdef
    body = '{"id":"evt_1","type":"call.ended"}'
    expected = "fad38dbb9550d02f627d8dd543334905c04e5c33a8284249508b8d33319acf89"
    assert hooks.sign("whsec_0123456789abcdef", 1_700_000_000, body) == expected
    assert hooks.signature_header("whsec_0123456789abcdef", 1_700_000_000, body.encode()) == \
        f"t=1700000000,v1={expected}"


def test_verify_signature():
    header = hooks.signature_header("s" * 16, 1_700_000_000, b"{}")
    assert hooks.verify_signature("s" * 16, header, b"{}")
    assert hooks.verify_signature("s" * 16, header, b"{}", now_s=1_700_000_100)
    assert not hooks.verify_signature("s" * 16, header, b"{}", now_s=1_700_001_000)   # too old: a replay
    assert not hooks.verify_signature("t" * 16, header, b"{}")
    assert not hooks.verify_signature("s" * 16, header, b"{ }")
    assert not hooks.verify_signature("s" * 16, "garbage", b"{}")
    assert not hooks.verify_signature("s" * 16, None, b"{}")


# -- targets ----------------------------------------------------------------------------------------------------------


def test_https_only_without_private_targets():
    target = hooks.check_url("https://Hooks.Example.com/in?x=1", allow_private=False)
    assert (target.scheme, target.host, target.port, target.path) == ("https", "hooks.example.com", 443, "/in?x=1")
    assert target.host_header == "hooks.example.com"
    with pytest.raises(TargetRefused, match="https"):
        hooks.check_url("http://hooks.example.com/", allow_private=False)
    assert hooks.check_url("http://127.0.0.1:8080/x", allow_private=True).host_header == "127.0.0.1:8080"


@pytest.mark.parametrize("url", ["", "ftp://x.example/", "https://", "https://user:pw@x.example/",
                                 "https://x.example/#frag", "https://x.example/a b", "https://x.example:99999/",
                                 "https://" + "a" * 2000 + ".example/", 42, None])
def test_malformed_urls_are_refused(url):
    with pytest.raises(TargetRefused):
        hooks.check_url(url, allow_private=True)


@pytest.mark.parametrize("url", ["https://127.0.0.1/", "https://10.1.2.3/", "https://[::1]/", "https://169.254.169.254/",
                                 "https://[::ffff:192.168.0.1]/", "https://0.0.0.0/", "https://224.0.0.1/",
                                 "https://100.64.0.1/", "https://[fe80::1]/", "https://[fc00::1]/"])
def test_literal_private_addresses_are_refused(url):
    with pytest.raises(TargetRefused):
        hooks.check_url(url, allow_private=False)


def test_a_host_must_resolve_to_public_addresses_only():
    def resolve(host, port):
        return {"good.example": ["93.184.216.34", "2606:2800:220:1::1"], "mixed.example": ["93.184.216.34", "10.0.0.5"],
                "none.example": []}[host]

    target = hooks.resolve_target("https://good.example/in", allow_private=False, resolve=resolve)
    assert target.address == "93.184.216.34" and target.host == "good.example"
    with pytest.raises(TargetRefused, match=r"10\.0\.0\.5"):
        hooks.resolve_target("https://mixed.example/", allow_private=False, resolve=resolve)
    with pytest.raises(TargetRefused, match="does not resolve"):
        hooks.resolve_target("https://none.example/", allow_private=False, resolve=resolve)
    allowed = hooks.resolve_target("https://mixed.example/", allow_private=True, resolve=resolve)
    assert allowed.address == "93.184.216.34"

    def broken(host, port):
        raise OSError("no such host")

    with pytest.raises(TargetRefused, match="does not resolve"):
        hooks.resolve_target("https://gone.example/", allow_private=False, resolve=broken)


def _non_global(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _non_global(ip.ipv4_mapped)
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified)


addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6),
                      st.ip_addresses(v=4).map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}")),
                      st.sampled_from([ipaddress.ip_network(n) for n in (
                          "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
                          "100.64.0.0/10", "::1/128", "fe80::/10", "fc00::/7", "224.0.0.0/4", "ff00::/8",
                          "0.0.0.0/8", "240.0.0.0/4")]).flatmap(
                          lambda net: st.integers(0, net.num_addresses - 1).map(lambda i: net[i])))


@settings(max_examples=500)
@given(addresses)
def test_no_non_global_address_is_ever_accepted_without_the_flag(ip):
    problem = hooks.address_problem(str(ip), allow_private=False)
    if _non_global(ip):
        assert problem is not None
    url = f"https://[{ip}]/" if ip.version == 6 else f"https://{ip}/"
    resolved = None
    try:
        resolved = hooks.resolve_target(url, allow_private=False, resolve=lambda h, p: [])
    except TargetRefused:
        pass
    assert (resolved is None) == (problem is not None)
    # a name resolving to it, among public ones, is judged by its worst address
    try:
        hooks.resolve_target("https://name.example/", allow_private=False,
                             resolve=lambda h, p: ["93.184.216.34", str(ip)])
        assert problem is None
    except TargetRefused:
        assert problem is not None


def _carried_v4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries, judged as that address: mapped, 6to4, Teredo's client, NAT64."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in ipaddress.IPv6Network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


@example(ipaddress.IPv6Address("64:ff9b::"))            # NAT64 of 0.0.0.0
@example(ipaddress.IPv6Address("64:ff9b::e000:1"))      # NAT64 of 224.0.0.1
@example(ipaddress.IPv6Address("2002:e000:1::1"))       # 6to4 of 224.0.0.1
@example(ipaddress.IPv6Address("64:ff9b::a00:5"))       # NAT64 of 10.0.0.5: private, allowed with the flag
@example(ipaddress.IPv6Address("2002::"))               # 6to4 of 0.0.0.0
@given(addresses)
def test_with_the_flag_only_multicast_and_unspecified_are_refused(ip):
    problem = hooks.address_problem(str(ip), allow_private=True)
    inner = _carried_v4(ip)
    refused = ip.is_multicast or ip.is_unspecified or (inner is not None and (inner.is_multicast
                                                                              or inner.is_unspecified))
    assert (problem is not None) == refused


# -- retries ----------------------------------------------------------------------------------------------------------


def test_the_backoff_doubles_from_ten_seconds_to_an_hour():
    waits = [hooks.retry_wait_s(n) for n in range(1, 12)]
    assert waits[:4] == [10, 20, 40, 80] and waits[-1] == 3600 and max(waits) == 3600
    assert hooks.retry_wait_s(3, jitter=lambda: 1.2) == pytest.approx(48)


def test_retries_until_twenty_four_hours_then_dead():
    created = 1_000_000
    expires = created + hooks.DELIVERY_WINDOW_MS
    now, attempts, tries = created, 0, []
    while True:
        attempts += 1
        tries.append(now)
        nxt = hooks.next_delivery_at(now_ms=now, wait_ms=int(hooks.retry_wait_s(attempts) * 1000),
                                     expires_at_ms=expires)
        if nxt is None:
            break
        assert now < nxt <= expires
        now = nxt
    assert tries[-1] == expires   # the last try is made at the end of the 24 hours, then the event is dead
    assert tries[1] - tries[0] == 10_000 and tries[2] - tries[1] == 20_000
    assert max(b - a for a, b in itertools.pairwise(tries)) == 3_600_000
    assert 24 + 8 <= len(tries) <= 24 + 12   # about one try an hour once the waits reach the cap
    assert hooks.next_delivery_at(now_ms=expires + 1, wait_ms=0, expires_at_ms=expires) is None
