"""The two retry disciplines: idempotent requests retry; a create is resent only if refused or never fully sent."""

from __future__ import annotations

import email.utils
import socket
import threading

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from provider_kit import Reply, serve

from pipeline.errors import ValidationError
from pipeline.providers.http import (
    Accepted,
    CreateRequest,
    Lost,
    Refused,
    RetryPolicy,
    backoff_seconds,
    make_client,
    parse_retry_after,
    send_create_once,
    send_idempotent,
)

FAST = RetryPolicy(attempts=4, initial=0.01, maximum=0.02, max_retry_after=0.05)


def _create(url, *, body=b'{"a":1}', classify=None, headers=None):
    """One create attempt's outcome (the flow decides what to do with it: tests/test_flow.py)."""
    req = CreateRequest("POST", url, lambda: headers or {"Content-Type": "application/json"}, lambda: [body], len(body))
    with make_client(timeout=5) as client:
        return send_create_once(
            client,
            req,
            provider="test",
            classify=classify or (lambda r: Refused("busy") if r.status_code == 429 else None),
        )


def test_a_refusal_is_reported_with_the_servers_wait():
    with serve(lambda r: Reply(429, b"busy", {"Retry-After": "7"})) as srv:
        outcome = _create(srv.url + "/create")
    assert outcome == Refused("busy", 7.0) and len(srv.requests) == 1


def test_an_accepting_reply_is_kept_verbatim():
    with serve(lambda r: Reply(200, b'{"id": "j1",  "x": 1}')) as srv:
        outcome = _create(srv.url + "/create")
    assert isinstance(outcome, Accepted) and outcome.body == {"id": "j1", "x": 1}
    assert outcome.raw == '{"id": "j1",  "x": 1}'


def test_answer_lost_after_sending_is_lost_and_sent_once():
    with serve(lambda r: None) as srv:  # reads the whole request, then hangs up
        outcome = _create(srv.url + "/create", headers={"Authorization": "Bearer sekrit-key-123"})
    assert isinstance(outcome, Lost) and len(srv.requests) == 1
    assert "sekrit" not in outcome.reason


def test_lost_verdict_is_lost_too():
    with serve(lambda r: Reply(502, b"bad gateway")) as srv:
        outcome = _create(srv.url + "/create", classify=lambda r: Lost(f"HTTP {r.status_code}"))
    assert outcome == Lost("HTTP 502") and len(srv.requests) == 1


def test_final_errors_are_raised_as_given():
    with serve(lambda r: Reply(400, b"no")) as srv, pytest.raises(ValidationError, match="bad input"):
        _create(srv.url + "/create", classify=lambda r: ValidationError("bad input"))
    assert len(srv.requests) == 1


def test_connection_refused_is_not_sent():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    outcome = _create(f"http://127.0.0.1:{port}/create")
    assert isinstance(outcome, Refused) and outcome.reason.startswith("not sent")


def test_body_cut_off_midway_is_not_sent_so_not_uncertain():
    """The server hangs up after a few bytes of a large body: it cannot have made a job."""
    body = b"x" * (8 << 20)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    def run():
        conn, _ = listener.accept()
        conn.recv(1024)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # RST mid-body

    t = threading.Thread(target=run, daemon=True)
    t.start()
    outcome = _create(f"http://127.0.0.1:{port}/create", body=body)
    t.join(5)
    listener.close()
    assert isinstance(outcome, Refused) and outcome.reason.startswith("not sent")


def test_idempotent_requests_retry_5xx_and_transport_errors():
    replies = iter([Reply(500, b"oops"), None, Reply(503, b"", {"Retry-After": "0"})])
    with serve(lambda r: next(replies, Reply(200, b"ok"))) as srv, make_client(timeout=5) as client:
        response = send_idempotent(
            client, lambda: client.build_request("GET", srv.url + "/s"), what="status", provider="test", policy=FAST
        )
    assert response.text == "ok" and len(srv.requests) == 4


def test_idempotent_retry_predicate_is_the_adapters():
    with serve(lambda r: Reply(596, b"account")) as srv, make_client(timeout=5) as client:
        response = send_idempotent(
            client,
            lambda: client.build_request("GET", srv.url + "/s"),
            what="status",
            provider="test",
            policy=FAST,
            retry_on=lambda r: False,
        )
    assert response.status_code == 596 and len(srv.requests) == 1


@pytest.mark.parametrize(
    "value,expect", [("7", 7.0), ("0", 0.0), ("-3", 0.0), ("soon", None), ("", None), (None, None)]
)
def test_retry_after_seconds(value, expect):
    assert parse_retry_after(value) == expect


@given(st.floats(0, 10_000))
def test_retry_after_http_date(delta):
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + delta, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(int(now + delta) - now, abs=1.0)


@given(st.integers(1, 30), st.one_of(st.none(), st.floats(0, 1000)), st.floats(0, 1))
def test_backoff_grows_caps_and_honours_retry_after(attempt, retry_after, jitter):
    policy = RetryPolicy(attempts=30, initial=1.0, maximum=30.0, max_retry_after=120.0)
    wait = backoff_seconds(policy, attempt, retry_after, jitter)
    assert wait <= max(policy.maximum + policy.initial, policy.max_retry_after)
    assert wait >= min(policy.initial * 2 ** (attempt - 1), policy.maximum)
    if retry_after is not None:
        assert wait >= min(retry_after, policy.max_retry_after)


def test_client_sends_no_default_credentials_and_does_not_follow_redirects():
    client = make_client()
    assert "authorization" not in client.headers and not client.follow_redirects
    assert isinstance(client, httpx.Client)
