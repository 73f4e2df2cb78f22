"""Result downloads: streamed, capped, checked, hashed, atomic; truncation retried, never delivered."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from media import media_info
from provider_kit import Reply, mp4_bytes, serve

from pipeline.errors import ProviderError, ValidationError
from pipeline.providers.download import acceptable_content_type, download_to, looks_like_mp4
from pipeline.providers.http import RetriesExhausted, RetryPolicy, make_client, require_safe_url
from pipeline.providers.netguard import loopback_origins

FAST = RetryPolicy(attempts=3, initial=0.01, maximum=0.02)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return mp4_bytes(tmp_path_factory.mktemp("dl"))


def _get(url, dst, max_bytes=10**7):
    """Download from a test server: its own loopback origin is allowed, as a provider configured there."""
    with make_client(timeout=10) as client:
        return download_to(
            client,
            url,
            dst,
            max_bytes=max_bytes,
            policy=FAST,
            provider="test",
            allowed_loopback=loopback_origins([url]),
        )


def test_download_is_complete_hashed_and_a_real_video(tmp_path, result):
    with serve(lambda r: Reply(body=result, headers={"Content-Type": "video/mp4"})) as srv:
        got = _get(srv.url + "/files/out.mp4", tmp_path / "final.mp4")
    data = (tmp_path / "final.mp4").read_bytes()
    assert data == result and got.size == len(result)
    assert got.sha256 == hashlib.sha256(result).hexdigest() and got.content_type == "video/mp4"
    assert media_info(got.path)["Video"][0].width == 64
    assert "authorization" not in srv.requests[0].headers
    assert [p.name for p in tmp_path.iterdir()] == ["final.mp4"]  # no temp file left behind


def test_truncated_download_is_retried_and_only_the_full_file_delivered(tmp_path, result):
    replies = iter([Reply(body=result, send_bytes=len(result) // 3), Reply(body=result, send_bytes=100)])

    def handler(req):
        return next(replies, Reply(body=result, headers={"Content-Type": "video/mp4"}))

    with serve(handler) as srv:
        got = _get(srv.url + "/r.mp4", tmp_path / "out.mp4")
    assert len(srv.requests) == 3
    assert (tmp_path / "out.mp4").read_bytes() == result and got.sha256 == hashlib.sha256(result).hexdigest()


def test_always_truncated_is_an_error_and_leaves_nothing(tmp_path, result):
    with serve(lambda r: Reply(body=result, send_bytes=len(result) - 1)) as srv:
        with pytest.raises(RetriesExhausted, match="download"):
            _get(srv.url + "/r.mp4", tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == []


def test_5xx_and_429_are_retried(tmp_path, result):
    replies = iter([Reply(503, b"busy"), Reply(429, b"slow down", {"Retry-After": "0"})])
    with serve(lambda r: next(replies, Reply(body=result))) as srv:
        _get(srv.url + "/r.mp4", tmp_path / "out.mp4")
    assert len(srv.requests) == 3 and (tmp_path / "out.mp4").read_bytes() == result


@pytest.mark.parametrize(
    "reply,match",
    [
        (Reply(body=b"<html>login</html>" * 10, headers={"Content-Type": "text/html"}), "not a video"),
        (Reply(body=b"{" + b"x" * 100 + b"}", headers={"Content-Type": "application/octet-stream"}), "not an MP4"),
        (Reply(404, b"gone"), "404"),
    ],
)
def test_wrong_content_is_refused(tmp_path, reply, match):
    with serve(lambda r: reply) as srv, pytest.raises(ProviderError, match=match):
        _get(srv.url + "/r.mp4", tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_size_cap_by_header_and_by_bytes(tmp_path, result):
    with serve(lambda r: Reply(body=result)) as srv, pytest.raises(ProviderError, match="cap"):
        _get(srv.url + "/r.mp4", tmp_path / "out.mp4", max_bytes=len(result) - 1)
    assert not (tmp_path / "out.mp4").exists()


def test_redirects_are_followed_and_checked(tmp_path, result):
    def handler(req):
        if req.path == "/a":
            return Reply(302, headers={"Location": "/b.mp4"})
        if req.path == "/evil":
            return Reply(302, headers={"Location": "http://example.com/x.mp4"})
        return Reply(body=result)

    with serve(handler) as srv:
        assert _get(srv.url + "/a", tmp_path / "out.mp4").size == len(result)
        with pytest.raises(ValidationError, match="https"):
            _get(srv.url + "/evil", tmp_path / "out2.mp4")


@pytest.mark.parametrize(
    "url,ok",
    [
        ("https://cdn.example.com/x.mp4", True),
        ("http://127.0.0.1:8000/x.mp4", True),  # the allowed origin below
        ("https://127.0.0.1:8000/x.mp4", True),
        ("http://127.0.0.1:8001/x.mp4", False),  # another port on loopback
        ("http://127.5.6.7/x.mp4", False),
        ("http://localhost/x.mp4", False),
        ("http://[::1]:9/x.mp4", False),
        ("http://cdn.example.com/x.mp4", False),
        ("http://10.0.0.1/x.mp4", False),
        ("https://10.0.0.1/x.mp4", False),
        ("ftp://127.0.0.1/x.mp4", False),
        ("file:///etc/passwd", False),
        ("/relative/path.mp4", False),
    ],
)
def test_url_policy(url, ok):
    allowed = loopback_origins(["http://127.0.0.1:8000"])
    if ok:
        assert require_safe_url(url, what="result", allowed_loopback=allowed) == url
    else:
        with pytest.raises(ValidationError):
            require_safe_url(url, what="result", allowed_loopback=allowed)


def test_content_type_and_box_checks():
    assert acceptable_content_type(None) and acceptable_content_type("video/mp4; charset=x")
    assert acceptable_content_type("binary/octet-stream") and not acceptable_content_type("text/html")
    assert looks_like_mp4(b"\x00\x00\x00\x18ftypisom") and looks_like_mp4(b"\x00\x00\x00\x08wide")
    assert not looks_like_mp4(b"<html><body>") and not looks_like_mp4(b"\x00\x00")


@given(st.binary(min_size=8, max_size=64))
def test_box_check_only_passes_known_boxes(head):
    assert looks_like_mp4(head) == (head[4:8] in {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})


def test_a_provider_file_name_never_becomes_a_path(tmp_path, result):
    dest = tmp_path / "deliver"
    evil = {"Content-Disposition": 'attachment; filename="../../escaped.mp4"', "Content-Type": "video/mp4"}
    with serve(lambda r: Reply(body=result, headers=evil)) as srv:
        got = _get(srv.url + "/files/..%2F..%2Fescaped.mp4", dest / "out.mp4")
    assert got.path == dest / "out.mp4"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["deliver", "deliver/out.mp4"]
