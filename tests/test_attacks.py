"""The standing attack suite: a hostile provider, CDN, proxy or config against the pipeline (issue 8).

Loopback only, every loop bounded. Each test names the finding it covers; each fails on the code before
the fix (the finding reproduced) and passes after it.
"""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from provider_kit import Reply, mp4_bytes, serve

from pipeline.errors import ConfigError, ProviderError, ValidationError
from pipeline.fsutil import atomic_output
from pipeline.limits import load_limits
from pipeline.providers import get_provider
from pipeline.providers.base import JobState, JobStatus, unknown_status
from pipeline.providers.download import TransferLimits, download_to, result_cap, too_slow
from pipeline.providers.fal import request_urls
from pipeline.providers.http import (
    CreateRequest,
    Lost,
    RetriesExhausted,
    RetryPolicy,
    make_client,
    same_origin,
    send_create_once,
    send_idempotent,
)
from pipeline.providers.netguard import (
    BlockedAddress,
    address_refusal,
    connect_refusal,
    embedded_ipv4,
    loopback_origins,
)
from pipeline.providers.poll import failure_error
from pipeline.run.config import check_creates_per_job, load_config, text_creates
from pipeline.run.progress import JobLine, Stage, status_text
from pipeline.run.rundir import (
    MARKER_NAME,
    Entry,
    Kind,
    claim_run_dir,
    judge_run_dir,
    list_run_dir,
    reserved_name_reason,
    stale_temps,
)
from pipeline.safetext import printable
from pipeline.secrets import Fingerprint, SecretRegistry
from pipeline.stages import text as text_stage
from pipeline.stages.handoff import CHECKSUMS_NAME, write_checksums

FAST = RetryPolicy(attempts=2, initial=0.01, maximum=0.02)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return mp4_bytes(tmp_path_factory.mktemp("attack-media"))


def recording_client():
    sent: list[httpx.Request] = []
    return make_client(timeout=5, event_hooks={"request": [sent.append]}), sent


# --- 1. SSRF: results only from public addresses ---------------------------------------------------------

FINDING_URLS = [
    "https://10.1.2.3/result.mp4",
    "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "https://192.168.0.1:8443/result.mp4",
    "http://127.0.0.2:9/result.mp4",
    "http://[::1]:9/result.mp4",
    "https://127.0.0.1/result.mp4",
    "https://[::ffff:10.0.0.1]/result.mp4",  # IPv4-mapped
    "https://[::ffff:169.254.169.254]/x",
    "https://[2002:a00:1::1]/result.mp4",  # 6to4 of 10.0.0.1
    "https://[64:ff9b::a9fe:a9fe]/x",  # NAT64 of 169.254.169.254
    "https://100.64.0.1/result.mp4",  # CGNAT (Alibaba's metadata is 100.100.100.200)
    "https://100.100.100.200/latest/meta-data",
    "https://0.0.0.0/result.mp4",
    "https://[::]/result.mp4",
    "https://224.0.0.1/result.mp4",
    "https://[ff02::1]/result.mp4",
    "https://[fe80::1]/result.mp4",
    "https://[fd00::1]/result.mp4",
    "https://240.0.0.1/result.mp4",
    "https://255.255.255.255/result.mp4",
    "https://172.16.5.4/result.mp4",
]


@pytest.mark.parametrize("url", FINDING_URLS)
def test_result_urls_at_internal_addresses_are_refused_before_any_request(tmp_path, url):
    client, sent = recording_client()
    looked_up = []
    with client, pytest.raises(ValidationError):
        download_to(
            client,
            url,
            tmp_path / "out.mp4",
            max_bytes=10**6,
            policy=FAST,
            provider="evil",
            resolver=lambda host, port: looked_up.append(host) or ["93.184.216.34"],
        )
    assert sent == [] and looked_up == [] and list(tmp_path.iterdir()) == []


def test_a_name_resolving_to_a_private_address_is_refused(tmp_path):
    client, _ = recording_client()
    asked = []

    def resolver(host, port):
        asked.append((host, port))
        return ["10.0.0.7"]

    with client, pytest.raises(BlockedAddress, match=r"10.0.0.7"):
        download_to(
            client,
            "https://cdn.example.test/r.mp4",
            tmp_path / "out.mp4",
            max_bytes=10**6,
            policy=FAST,
            provider="evil",
            resolver=resolver,
        )
    assert asked == [("cdn.example.test", 443)]
    assert list(tmp_path.iterdir()) == []


def test_a_name_resolving_to_a_listening_loopback_server_never_reaches_it(tmp_path, result):
    with serve(lambda r: Reply(body=result)) as srv, make_client(timeout=5) as client:
        port = httpx.URL(srv.url).port
        with pytest.raises(BlockedAddress, match="loopback"):
            download_to(
                client,
                f"https://rebind.example.test:{port}/r.mp4",
                tmp_path / "out.mp4",
                max_bytes=10**6,
                policy=FAST,
                provider="evil",
                resolver=lambda h, p: ["127.0.0.1"],
            )
        assert srv.requests == []


def test_a_mixed_answer_is_refused_whole():
    assert "10.0.0.1" in connect_refusal("cdn.example.test", 443, ["93.184.216.34", "10.0.0.1"])
    assert connect_refusal("cdn.example.test", 443, ["93.184.216.34", "2606:4700::1"]) is None
    assert connect_refusal("cdn.example.test", 443, []) is not None


def test_the_checked_address_is_dialled_once_and_the_name_kept_in_host(tmp_path, result):
    """The allowed loopback origin by name: one lookup, the socket goes to its answer, Host stays the name."""
    with serve(lambda r: Reply(body=result)) as srv, make_client(timeout=5) as client:
        port = httpx.URL(srv.url).port
        asked = []
        got = download_to(
            client,
            f"http://results.test:{port}/r.mp4",
            tmp_path / "out.mp4",
            max_bytes=10**6,
            policy=FAST,
            provider="local",
            allowed_loopback={("results.test", port)},
            resolver=lambda h, p: asked.append(h) or ["127.0.0.1"],
        )
    assert got.size == len(result) and asked == ["results.test"]
    assert [r.headers["host"] for r in srv.requests] == [f"results.test:{port}"]


def test_redirect_hops_to_internal_addresses_are_refused(tmp_path, result):
    hops = {
        "/a": "https://10.1.2.3/x.mp4",
        "/b": "http://127.0.0.2:9/x.mp4",
        "/c": "http://[::1]:9/x.mp4",
        "/d": "https://169.254.169.254/latest/meta-data",
    }

    def handler(req):
        return Reply(302, headers={"Location": hops[req.path]}) if req.path in hops else Reply(body=result)

    with serve(handler) as srv, make_client(timeout=5) as client:
        for path in hops:
            with pytest.raises(ValidationError):
                download_to(
                    client,
                    srv.url + path,
                    tmp_path / "out.mp4",
                    max_bytes=10**6,
                    policy=FAST,
                    provider="evil",
                    allowed_loopback=loopback_origins([srv.url]),
                )
        assert sorted(r.path for r in srv.requests) == sorted(hops)  # one request each: the first hop
    assert not (tmp_path / "out.mp4").exists()


def test_a_provider_on_loopback_allows_exactly_its_own_host_and_port(tmp_path, result):
    with serve(lambda r: Reply(body=result)) as own, serve(lambda r: Reply(body=result)) as other:
        provider = get_provider("useapi", credential=None, base_urls={"useapi": own.url}, retry=FAST)
        with provider:
            assert provider.download(own.url + "/r.mp4", tmp_path / "a.mp4", max_bytes=10**6).size == len(result)
            with pytest.raises(ValidationError):
                provider.download(other.url + "/r.mp4", tmp_path / "b.mp4", max_bytes=10**6)
            with pytest.raises(ValidationError):  # the same port by another loopback name
                provider.download(
                    own.url.replace("127.0.0.1", "localhost") + "/r.mp4", tmp_path / "c.mp4", max_bytes=10**6
                )
        assert other.requests == []


def test_a_provider_on_a_public_host_allows_no_loopback_at_all(tmp_path):
    provider = get_provider("fal", credential=None)
    assert provider.loopback_origins == frozenset()
    with provider, pytest.raises(ValidationError):
        provider.download("http://127.0.0.1:9/r.mp4", tmp_path / "r.mp4", max_bytes=10**6)


_ipv4 = st.ip_addresses(v=4)


@given(_ipv4)
def test_an_allowed_ipv4_is_global_and_unicast(ip):
    if address_refusal(ip) is None:
        assert ip.is_global and not ip.is_multicast and not ip.is_reserved


@given(st.ip_addresses(v=6))
def test_an_allowed_ipv6_is_global_unicast_or_carries_an_allowed_ipv4(ip):
    if address_refusal(ip) is None:
        carried = embedded_ipv4(ip)
        assert (carried is not None and address_refusal(carried[1]) is None) or (
            ip.is_global and not ip.is_multicast and not ip.is_link_local and not ip.is_site_local
        )


@given(_ipv4)
def test_ipv6_forms_of_an_ipv4_are_judged_as_that_ipv4(ip):
    v4 = int(ip)
    forms = [
        ipaddress.IPv6Address((0xFFFF << 32) | v4),  # ::ffff:a.b.c.d
        ipaddress.IPv6Address((0x2002 << 112) | (v4 << 80)),  # 2002:aabb:ccdd::
        ipaddress.IPv6Address((0x64FF9B << 96) | v4),
    ]  # 64:ff9b::a.b.c.d
    for form in forms:
        assert (address_refusal(form) is None) == (address_refusal(ip) is None), form


@given(
    st.sampled_from(
        [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "100.64.0.0/10",
            "0.0.0.0/8",
            "224.0.0.0/4",
            "240.0.0.0/4",
        ]
    ),
    st.integers(0, 2**32),
)
def test_every_address_of_the_internal_ranges_is_refused(net, n):
    network = ipaddress.ip_network(net)
    assert address_refusal(network[n % network.num_addresses]) is not None


# --- 2. a control character in a reply's URL never crashes the create path ---------------------------------


def test_control_characters_in_reply_urls_do_not_raise():
    assert same_origin("https://queue.fal.run/x\x07\n", "https://queue.fal.run") is False
    urls = request_urls(
        "https://queue.fal.run",
        "r-1",
        {"status_url": "https://queue.fal.run/s\x00\x1b[2J", "response_url": "https://queue.fal.run/\nx"},
    )
    assert urls["status"] == "https://queue.fal.run/fal-ai/pixverse/requests/r-1/status"
    assert urls["response"] == "https://queue.fal.run/fal-ai/pixverse/requests/r-1"


def test_an_id_that_makes_no_url_is_a_provider_error_not_a_crash():
    with make_client(timeout=5) as client, pytest.raises(ProviderError, match="non-printable") as info:
        send_idempotent(
            client,
            lambda: client.build_request("GET", "https://api.example.test/v/\x00\n"),
            what="status of job x\x1b[2J",
            provider="evil",
            policy=FAST,
        )
    assert not isinstance(info.value, RetriesExhausted)


# --- 3. hostile numbers: see tests/test_providers_parsing.py (every adapter's parse functions) --------------


# --- 4. a download has a deadline and a minimum rate; the cap comes from the provider's limits -----------


@contextmanager
def drip_server(head: bytes, *, every_s: float, max_drips: int):
    """A raw loopback server: answers one request with MP4-looking bytes, then one byte every `every_s`
    seconds (at most `max_drips`), stopping when the client goes away. Yields (url, sent counter)."""
    listener = socket.create_server(("127.0.0.1", 0))
    sent = {"bytes": 0, "stopped_early": False}

    def run():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            total = len(head) + max_drips
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: %d\r\n\r\n" % total + head)
            for _ in range(max_drips):
                time.sleep(every_s)
                try:
                    conn.sendall(b"\x00")
                except OSError:
                    sent["stopped_early"] = True
                    return
                sent["bytes"] += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/r.mp4", sent
    finally:
        thread.join(timeout=30)
        listener.close()


def test_a_dripping_server_is_cut_off_at_the_deadline(tmp_path):
    with drip_server(b"\x00\x00\x00\x18ftypisom", every_s=0.05, max_drips=400) as (url, sent):
        with make_client(timeout=60) as client, pytest.raises(ProviderError, match="deadline"):
            download_to(
                client,
                url,
                tmp_path / "out.mp4",
                max_bytes=10**6,
                policy=FAST,
                provider="drip",
                allowed_loopback=loopback_origins([url]),
                limits=TransferLimits(deadline_s=2.0, min_rate=0, rate_grace_s=0),  # time to connect when loaded
            )
    assert sent["stopped_early"] and sent["bytes"] < 400
    assert list(tmp_path.iterdir()) == []


def test_a_dripping_server_under_the_minimum_rate_is_cut_off(tmp_path):
    with drip_server(b"\x00\x00\x00\x18ftypisom", every_s=0.05, max_drips=400) as (url, sent):
        with make_client(timeout=60) as client, pytest.raises(ProviderError, match="too slow"):
            download_to(
                client,
                url,
                tmp_path / "out.mp4",
                max_bytes=10**6,
                policy=FAST,
                provider="drip",
                allowed_loopback=loopback_origins([url]),
                limits=TransferLimits(deadline_s=60, min_rate=1000, rate_grace_s=0.3),
            )
    assert sent["stopped_early"] and sent["bytes"] < 400


@given(st.floats(0, 10_000), st.integers(0, 10**10))
def test_the_rate_floor_waits_for_its_grace_and_judges_the_average(elapsed, size):
    limits = TransferLimits()
    verdict = too_slow(limits, elapsed, size)
    if elapsed <= limits.rate_grace_s:
        assert verdict is None
    else:
        assert (verdict is None) == (size / elapsed >= limits.min_rate)


def test_the_defaults_let_a_50_mb_result_arrive_over_a_slow_link():
    limits = TransferLimits()
    slow_link = 50_000  # bytes per second: 400 kbit/s
    seconds = 50_000_000 / slow_link
    assert seconds < limits.deadline_s and too_slow(limits, seconds, 50_000_000) is None


def test_the_size_cap_follows_the_provider_limits():
    assert result_cap(load_limits("fal")) == 4 * load_limits("fal").video_max_bytes < 2_000_000_000
    assert result_cap(load_limits("fal", {"video_max_bytes": 1000})) == 4000


def test_the_download_limits_are_configurable(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "voice.wav").write_bytes(b"x")
    config = tmp_path / "run.toml"
    body = (
        '[run]\nname = "n"\nprovider = "fal"\n[run.download]\n{}\n'
        '[[job]]\nid = "a"\nvideo = "clip.mp4"\naudio = "voice.wav"\n'
    )
    config.write_text(body.format("deadline_s = 120\nmin_rate_bytes_s = 500"))
    assert load_config(config).download.transfer_limits() == TransferLimits(120, 500, 60)
    config.write_text(body.format("deadline_s = -1"))
    with pytest.raises(ConfigError, match="deadline_s"):
        load_config(config)


# --- 5/6. terminal and log injection; unbounded replies -------------------------------------------------

FORGED = "running\x1b]0;pwned\x07\n\rERROR forged: all jobs failed, delete out/\u202e4pm.exe\x9b2J"


def _inert(text: str) -> bool:
    return not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u202e\u2066\u2028" for ch in text)


def test_printable_escapes_controls_and_cuts_long_values():
    shown = printable(FORGED)
    assert _inert(shown) and "\\x1b]0;pwned\\x07\\n\\rERROR" in shown and "\\u202e" in shown
    long = printable("x" * 10_000_000)
    assert len(long) < 300 and "10000000 characters" in long


@given(st.text(), st.integers(1, 500))
def test_printable_is_always_one_inert_bounded_line(text, max_len):
    shown = printable(text, max_len)
    assert _inert(shown) and len(shown) <= max_len + 40
    if _inert(text) and len(text) <= max_len:
        assert shown == text


def test_provider_words_in_log_lines_are_inert(caplog):
    with caplog.at_level("WARNING", logger="lipsync.providers"):
        unknown_status("fal", FORGED + "y" * 10_000_000)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert _inert(message) and len(message) < 400


def test_provider_text_in_errors_and_the_live_display_is_inert():
    status = JobStatus(JobState.FAILED, FORGED, error_message=FORGED * 1000)
    error = failure_error(status, "fal", "r-1\n\x1b[31m", "failed")
    assert _inert(error.render()) and len(error.render()) < 800
    assert _inert(status_text(JobStatus(JobState.RUNNING, FORGED)))
    line = JobLine("job", "fal", stage=Stage.FAILED, note=FORGED)
    assert _inert(line.detail()) and _inert(line.describe())


def test_lipsync_status_rows_are_inert_and_redacted(monkeypatch):
    from pipeline.cli.status import job_row
    from pipeline.run.ledger import JobCost

    monkeypatch.setenv("FAL_KEY", "fal-status-key-0123456789")
    row = SimpleNamespace(
        job_id="a",
        provider="fal",
        stage=Stage.FAILED,
        error=FORGED + " fal-status-key-0123456789",
        final_path=None,
        detail=None,
        started_at=0.0,
        finished_at=1.0,
    )
    create = SimpleNamespace(
        provider_job_id="id\n\x1b]0;x\x07", provider_state=FORGED, state=SimpleNamespace(value="created")
    )
    cost = JobCost((), ())
    cells = job_row(SimpleNamespace(row=row, stages=[], creates=[create], cost=cost), now=2.0)
    assert all(_inert(cell) for cell in cells) and "fal-status-key" not in "".join(cells)


def test_a_huge_status_reply_is_refused_not_held(tmp_path):
    big = b'{"status": "' + b"x" * 5_000_000 + b'"}'
    with (
        serve(lambda r: Reply(body=big, headers={"Content-Type": "application/json"})) as srv,
        make_client(timeout=5) as client,
        pytest.raises(RetriesExhausted, match="cap"),
    ):
        send_idempotent(
            client,
            lambda: client.build_request("GET", srv.url + "/status"),
            what="status",
            provider="evil",
            policy=FAST,
        )


def test_a_gzip_bomb_reply_is_refused_by_its_inflated_size():
    bomb = gzip.compress(b"{" + b" " * 20_000_000 + b"}")
    assert len(bomb) < 100_000
    with (
        serve(
            lambda r: Reply(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        ) as srv,
        make_client(timeout=5) as client,
        pytest.raises(RetriesExhausted, match="cap"),
    ):
        send_idempotent(
            client,
            lambda: client.build_request("GET", srv.url + "/status"),
            what="status",
            provider="evil",
            policy=FAST,
        )


def test_a_huge_create_reply_is_a_lost_answer_not_a_crash():
    big = b'{"request_id": "r-1", "pad": "' + b"x" * 3_000_000 + b'"}'
    with (
        serve(lambda r: Reply(body=big, headers={"Content-Type": "application/json"})) as srv,
        make_client(timeout=5) as client,
    ):
        request = CreateRequest("POST", srv.url + "/create", dict, lambda: [b"{}"], 2)
        outcome = send_create_once(client, request, provider="evil", classify=lambda r: None)
    assert isinstance(outcome, Lost) and "cap" in outcome.reason


# --- 7. redaction by what the process was given, not what the shell holds now ------------------------------


def test_a_key_recorded_at_start_is_redacted_after_it_left_the_environment():
    registry = SecretRegistry()
    env = {"FAL_KEY": "fal-recorded-key-1234567890"}
    registry.record_environment(env)
    env.clear()
    assert registry.redact("echoed: fal-recorded-key-1234567890!") == "echoed: ***!"


def test_a_fingerprint_alone_redacts_a_key_in_a_later_process():
    key = "use-fingerprinted-token-77"
    stored = [f.to_dict() for f in _registry_with(key).fingerprints()]
    assert key not in json.dumps(stored)
    later = SecretRegistry()
    later.add_fingerprints(Fingerprint.from_dict(d) for d in stored)
    assert later.redact(f"error: bad token {key}; also {key}x") == "error: bad token ***; also ***x"


def _registry_with(value: str) -> SecretRegistry:
    registry = SecretRegistry()
    registry.add(value)
    return registry


# --- 8. output folders holding the user's files ---------------------------------------------------------


def _user_folder(root: Path) -> Path:
    out = root / "out"
    (out / "job1").mkdir(parents=True)
    (out / CHECKSUMS_NAME).write_text("theirs\n")
    (out / "notes.part.txt").write_text("theirs")
    (out / "job1" / ".final.abcdefgh.part.mp4.bak").write_text("theirs")
    (out / "passwd").symlink_to("/etc/passwd")
    return out


def test_a_folder_of_the_users_files_is_refused_without_force(tmp_path):
    out = _user_folder(tmp_path)
    with pytest.raises(ConfigError) as info:
        claim_run_dir(out, ["job1"])
    assert info.value.exit_code == 6 and CHECKSUMS_NAME in str(info.value)
    assert not (out / MARKER_NAME).exists()
    verdict = claim_run_dir(out, ["job1"], force=True)
    assert {CHECKSUMS_NAME, "notes.part.txt", "passwd", "job1"} <= set(verdict.foreign)


def test_a_run_directory_of_ours_is_accepted_and_user_additions_are_named(tmp_path):
    out = tmp_path / "out"
    claim_run_dir(out, ["job1"])
    for name in ("ledger.sqlite", "ledger.sqlite-wal", ".lock", CHECKSUMS_NAME):
        (out / name).write_text("")
    (out / ".work" / "job1").mkdir(parents=True)
    (out / "job1").mkdir()
    with atomic_output(out / "job1" / "final.mp4") as tmp:
        tmp.write_bytes(b"v")
    assert claim_run_dir(out, ["job1"]).ok
    (out / "job1" / "notes.txt").write_text("mine")
    (out / "job1" / "evil.mp4").symlink_to("/etc/passwd")
    verdict = judge_run_dir(list_run_dir(out, ["job1"]), ["job1"], marked=True)
    assert verdict.foreign == ("job1/evil.mp4", "job1/notes.txt")


def test_only_our_own_temp_names_are_stale():
    entries = [
        Entry("job1/.final.k2j4h5g6.part.mp4", Kind.FILE),
        Entry("job1/.final.x1.part.mp4", Kind.FILE),
        Entry("job1/my.part.mp4", Kind.FILE),
        Entry("job1/.manifest.abcd_123.part.json", Kind.FILE),
        Entry("job1/.final.zzzzzzzz.part.mp4", Kind.SYMLINK),
    ]
    assert stale_temps(entries, foreign=()) == ["job1/.final.k2j4h5g6.part.mp4", "job1/.manifest.abcd_123.part.json"]
    assert stale_temps(entries, foreign=("job1/.final.k2j4h5g6.part.mp4",)) == ["job1/.manifest.abcd_123.part.json"]


def test_checksums_list_exactly_the_delivered_files_and_never_follow_a_symlink(tmp_path):
    out = _user_folder(tmp_path)
    (out / "job1" / "final.mp4").write_bytes(b"video")
    (out / "job1" / "link.mp4").symlink_to("/etc/passwd")
    (out / "sub").symlink_to(out / "job1")
    write_checksums(out, ["job1/final.mp4", "job1/link.mp4", "passwd", "sub/final.mp4", "../etc/passwd", "/etc/passwd"])
    assert (out / CHECKSUMS_NAME).read_text() == f"{hashlib.sha256(b'video').hexdigest()}  job1/final.mp4\n"
    with pytest.raises(ValidationError, match="did not write"):
        write_checksums(out, ["job1/final.mp4"], protected=[CHECKSUMS_NAME])


def test_without_a_list_checksums_cover_only_what_manifests_delivered(tmp_path):
    out = _user_folder(tmp_path)
    (out / "job1" / "final.mp4").write_bytes(b"video")
    write_checksums(out)
    assert (out / CHECKSUMS_NAME).read_text() == ""


# --- 9. scripts: linear chunking, capped creates ---------------------------------------------------------


class _CountedText(str):
    """The normalized script, remembering the length of every slice taken of it."""

    slices: list[int]

    def __getitem__(self, key):
        piece = str.__getitem__(self, key)
        if isinstance(key, slice):
            self.slices.append(len(piece))
        return piece


def test_chunking_examines_each_character_a_bounded_number_of_times(monkeypatch):
    """Linear time, counted rather than timed: the chunker only ever slices one window of at most
    max_chars + 1 characters off the script per chunk (the old one copied the whole rest of the script for
    every chunk: quadratic), and every speech estimate looks at no more than that window."""
    real_normalize, real_estimate = text_stage.normalize_text, text_stage.estimate_speech_seconds
    counted = _CountedText(real_normalize("Words, words; more words. And then some more of them? Yes! " * 20_000))
    counted.slices = []
    estimated: list[int] = []
    monkeypatch.setattr(text_stage, "normalize_text", lambda text: counted)
    monkeypatch.setattr(
        text_stage, "estimate_speech_seconds", lambda piece: estimated.append(len(piece)) or real_estimate(piece)
    )
    chunks = text_stage.chunk_text("ignored: the counted script stands in", 200, 30.0)
    assert "".join(chunks) == counted
    assert max(counted.slices) <= 201 and len(counted.slices) <= len(chunks)
    assert max(estimated) <= 201 and len(estimated) <= 10 * len(chunks)


def test_a_long_script_is_refused_before_it_becomes_paid_jobs(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "script.txt").write_text("This sentence is read aloud by the provider. " * 450)  # 20 KB
    config = tmp_path / "run.toml"
    config.write_text(
        '[run]\nname = "n"\nprovider = "fal"\n[[job]]\nid = "talk"\nvideo = "clip.mp4"\ntext_file = "script.txt"\n'
    )
    loaded = load_config(config)
    creates = text_creates(loaded.jobs[0])
    assert creates > 20 and loaded.max_creates_per_job == 20
    with pytest.raises(ConfigError) as info:
        check_creates_per_job(loaded, "talk", creates)
    assert info.value.exit_code == 6
    assert all(s in str(info.value) for s in ("'talk'", str(creates), "run.max_creates_per_job"))
    config.write_text(config.read_text().replace('provider = "fal"\n', 'provider = "fal"\nmax_creates_per_job = 500\n'))
    raised = load_config(config)
    assert check_creates_per_job(raised, "talk", creates) == creates


# --- 10/11. reserved job ids; the config path itself --------------------------------------------------------


@pytest.mark.parametrize(
    "job_id",
    [
        "ledger.sqlite",
        "checksums.sha256",
        "Ledger.SQLite",
        "ledger.sqlite-wal",
        "manifest.json",
        "final.mp4",
        "run.db",
        "nul",
    ],
)
def test_job_ids_naming_run_directory_files_are_refused(tmp_path, job_id):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "voice.wav").write_bytes(b"x")
    config = tmp_path / "run.toml"
    config.write_text(
        f'[run]\nname = "n"\nprovider = "fal"\n[[job]]\nid = "{job_id}"\nvideo = "clip.mp4"\naudio = "voice.wav"\n'
    )
    assert reserved_name_reason(job_id) is not None
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.exit_code == 6 and "job[0].id" in str(info.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_config_is_refused_at_once(tmp_path):
    fifo = tmp_path / "run.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(fifo)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_dev_zero_as_config_is_refused_in_one_line():
    with pytest.raises(ConfigError) as info:
        load_config("/dev/zero")
    assert "not a regular file" in str(info.value) and "\n" not in str(info.value)


def test_an_oversized_config_or_script_is_refused(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="over the"):
        load_config(config)
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "script.txt").write_text("word " * 400_000)
    config.write_text(
        '[run]\nname = "n"\nprovider = "fal"\n[[job]]\nid = "a"\nvideo = "clip.mp4"\ntext_file = "script.txt"\n'
    )
    with pytest.raises(ConfigError, match="script"):
        load_config(config)


@settings(max_examples=200)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789._-", min_size=1, max_size=20))
def test_reserved_names_never_collide_with_a_sane_job_folder(job_id):
    if reserved_name_reason(job_id) is None:
        assert job_id.lower() not in {"ledger.sqlite", "checksums.sha256", ".lock", ".work", MARKER_NAME}
