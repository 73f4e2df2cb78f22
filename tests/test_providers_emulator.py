"""Every adapter against the emulator over real HTTP on loopback: audio and TTS jobs, and every fault."""

from __future__ import annotations

import hashlib
import time

import pytest
from media import media_info
from provider_kit import create_job, recording_client, run_job, tiny_media

from pipeline.emulator import Emulator, EmulatorSettings
from pipeline.errors import BillingError, GenerationFailed, JobTimeout, Moderated, UncertainCreate
from pipeline.providers import (
    JobHandle,
    JobRequest,
    JobState,
    PollPolicy,
    RetryPolicy,
    credential_from_env,
    get_provider,
    wait_for_job,
)

PROVIDERS = ["pixverse", "aimlapi", "useapi", "fal"]
POLL = PollPolicy(initial=0.05, factor=1.5, maximum=0.25, timeout=30)
RETRY = RetryPolicy(attempts=4, initial=0.02, maximum=0.1, max_retry_after=0.2)
CREATE_RETRY = RetryPolicy(attempts=6, initial=0.02, maximum=0.1, max_retry_after=0.2)
AUTH_HEADERS = ("authorization", "api-key")


@pytest.fixture(scope="module")
def emu():
    with Emulator(EmulatorSettings(latency_s=0.3, queue_s=0.1, output_short_side=96)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return tiny_media(tmp_path_factory.mktemp("provider-media"))


@pytest.fixture(autouse=True)
def env(emu, monkeypatch):
    for var, value in emu.env().items():
        monkeypatch.setenv(var, value)
    for name in PROVIDERS:
        emu.faults(name).clear()
    yield
    for name in PROVIDERS:
        emu.faults(name).clear()


def _provider(emu, name, client=None, **kw):
    kw.setdefault("poll", POLL)
    return get_provider(
        name,
        credential=credential_from_env(name),
        base_urls=emu.base_urls,
        retry=RETRY,
        create_retry=CREATE_RETRY,
        client=client,
        **kw,
    )


def _assert_result(path, record_sha):
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == record_sha
    tracks = media_info(path)
    assert tracks["Video"][0].width > 0 and tracks["Audio"], "result must be a video with sound"


@pytest.mark.parametrize("name", PROVIDERS)
def test_audio_job_end_to_end(emu, media, tmp_path, name):
    video, audio = media
    before = emu.accepted_creates(name)
    handles = []
    with _provider(emu, name) as p:
        record = run_job(p, JobRequest(video, audio), tmp_path / "out.mp4", on_handle=handles.append)
    assert emu.accepted_creates(name) == before + 1
    assert handles and handles[0].job_id == record.job_id
    assert record.states[-1]["state"] == "succeeded" and record.seconds > 0
    _assert_result(tmp_path / "out.mp4", record.sha256)
    assert record.size == (tmp_path / "out.mp4").stat().st_size


@pytest.mark.parametrize("name", PROVIDERS)
def test_tts_job_end_to_end(emu, media, tmp_path, name):
    video, _ = media
    with _provider(emu, name) as p:
        record = run_job(
            p, JobRequest(video, text="Hello there, this is a test.", speaker="oliver"), tmp_path / "tts.mp4"
        )
    _assert_result(tmp_path / "tts.mp4", record.sha256)


def test_pixverse_ids_beyond_2_53_survive(emu, media):
    video, audio = media
    with _provider(emu, "pixverse") as p:
        handle = create_job(p, JobRequest(video, audio))
        assert int(handle.job_id) > 2**53
        status = wait_for_job(p, handle)
    assert status.state is JobState.SUCCEEDED and status.width and status.height


@pytest.mark.parametrize("name", PROVIDERS)
def test_rate_limited_creates_are_retried_once_accepted(emu, media, tmp_path, name):
    video, audio = media
    emu.faults(name).rate_limit_creates = 3
    before = emu.accepted_creates(name)
    with _provider(emu, name) as p:
        run_job(p, JobRequest(video, audio), tmp_path / "out.mp4")
    assert emu.accepted_creates(name) == before + 1
    assert emu.faults(name).rate_limit_creates == 0


@pytest.mark.parametrize("name", PROVIDERS)
def test_server_errors_on_polls_are_ridden_out(emu, media, tmp_path, name):
    video, audio = media
    with _provider(emu, name) as p:
        handle = create_job(p, JobRequest(video, audio))
        emu.faults(name).server_errors = 5  # more than one poll's retries: the wait must go on
        status = wait_for_job(p, handle)
        got = p.download(status.result_url, tmp_path / "out.mp4", max_bytes=10**8)
    assert emu.faults(name).server_errors == 0
    _assert_result(got.path, got.sha256)


@pytest.mark.parametrize("name", PROVIDERS)
def test_slow_replies(emu, media, tmp_path, name):
    video, audio = media
    emu.faults(name).slow_reply_s = 0.2
    with _provider(emu, name) as p:
        record = run_job(p, JobRequest(video, audio), tmp_path / "out.mp4")
    _assert_result(tmp_path / "out.mp4", record.sha256)


@pytest.mark.parametrize("name", PROVIDERS)
def test_dropped_create_answer_is_uncertain_and_not_resent(emu, media, name):
    video, audio = media
    emu.faults(name).drop_after_create = 1
    before = emu.accepted_creates(name)
    with _provider(emu, name) as p, pytest.raises(UncertainCreate) as info:
        create_job(p, JobRequest(video, audio), reply_ref="job-42")
    assert emu.accepted_creates(name) == before + 1  # ONE billable create, no blind resend
    rec = info.value.reconcile
    assert rec["provider"] == name and rec["endpoint"].startswith("http") and len(rec["fingerprint"]) == 64
    assert rec["sent_at"] and rec["reply_ref"] == "job-42"
    key = emu.env()[
        {"pixverse": "PIXVERSE_API_KEY", "aimlapi": "AIMLAPI_KEY", "useapi": "USEAPI_TOKEN", "fal": "FAL_KEY"}[name]
    ]
    assert key not in str(info.value) and key not in repr(rec)
    assert "base64," not in repr(rec) and len(repr(rec)) < 4000  # media described, never embedded


@pytest.mark.parametrize("fault,error", [("moderate", Moderated), ("fail_generation", GenerationFailed)])
@pytest.mark.parametrize("name", PROVIDERS)
def test_failed_generations_are_exit_5(emu, media, name, fault, error):
    video, audio = media
    setattr(emu.faults(name), fault, True)
    with _provider(emu, name) as p, pytest.raises(GenerationFailed) as info:
        wait_for_job(p, create_job(p, JobRequest(video, audio)))
    assert type(info.value) is error and info.value.exit_code == 5 and info.value.provider == name


@pytest.mark.parametrize("name", PROVIDERS)
def test_flapping_status_never_succeeds_early(emu, media, tmp_path, name):
    video, audio = media
    emu.faults(name).flap_status = True
    seen = []
    with _provider(emu, name) as p:
        handle = create_job(p, JobRequest(video, audio))
        status = wait_for_job(p, handle, on_status=seen.append)
        got = p.download(status.result_url, tmp_path / "out.mp4", max_bytes=10**8)
    successes = [s for s in seen if s.state is JobState.SUCCEEDED and s.result_url]
    assert successes == [status]  # the first evidence-backed success is the one returned
    _assert_result(got.path, got.sha256)


@pytest.mark.parametrize("name", PROVIDERS)
def test_truncated_download_is_retried(emu, media, tmp_path, name):
    video, audio = media
    with _provider(emu, name) as p:
        status = wait_for_job(p, create_job(p, JobRequest(video, audio)))
        emu.faults(name).truncate_downloads = 1
        first = p.download(status.result_url, tmp_path / "a.mp4", max_bytes=10**8)
        second = p.download(status.result_url, tmp_path / "b.mp4", max_bytes=10**8)
    assert emu.faults(name).truncate_downloads == 0
    assert first.sha256 == second.sha256 and first.size == second.size
    _assert_result(first.path, first.sha256)


@pytest.mark.parametrize("name", PROVIDERS)
def test_stuck_job_times_out_within_the_bound(emu, media, name):
    video, audio = media
    emu.faults(name).stuck = True
    bound = 1.5
    with _provider(emu, name, poll=PollPolicy(initial=0.05, maximum=0.3, timeout=bound)) as p:
        handle = create_job(p, JobRequest(video, audio))
        start = time.monotonic()
        with pytest.raises(JobTimeout) as info:
            wait_for_job(p, handle)
        waited = time.monotonic() - start
    assert bound <= waited < bound + 5
    assert handle.job_id in str(info.value) and info.value.exit_code == 2
    if name == "fal":
        assert "cancel requested" in str(info.value)


@pytest.mark.parametrize("name", PROVIDERS)
def test_out_of_credits_is_exit_4(emu, media, name):
    video, audio = media
    emu.faults(name).out_of_credits = True
    before = emu.accepted_creates(name)
    with _provider(emu, name) as p, pytest.raises(BillingError) as info:
        create_job(p, JobRequest(video, audio))
    assert info.value.exit_code == 4 and emu.accepted_creates(name) == before


@pytest.mark.parametrize("name", PROVIDERS)
def test_resume_from_a_stored_handle_in_a_fresh_instance(emu, media, tmp_path, name):
    video, audio = media
    with _provider(emu, name) as first:
        stored = create_job(first, JobRequest(video, audio)).to_dict()
    import json

    handle = JobHandle.from_dict(json.loads(json.dumps(stored)))  # as the ledger keeps it
    with _provider(emu, name) as second:
        status = wait_for_job(second, handle)
        got = second.download(status.result_url, tmp_path / "out.mp4", max_bytes=10**8)
    _assert_result(got.path, got.sha256)


def test_fal_cancel(emu, media):
    video, audio = media
    emu.faults("fal").stuck = True
    with _provider(emu, "fal") as p:
        handle = create_job(p, JobRequest(video, audio))
        assert p.cancel(handle) is True
        with pytest.raises(GenerationFailed):
            wait_for_job(p, handle)


@pytest.mark.parametrize("name", PROVIDERS)
def test_credentials_go_only_to_the_providers_hosts(emu, media, tmp_path, name):
    """The key goes only under the provider's base URLs; fal's CDN upload carries only the storage token;
    result downloads carry no credentials at all. Checked on every request the client really sent."""
    video, audio = media
    client, sent = recording_client()
    key_var = {"pixverse": "PIXVERSE_API_KEY", "aimlapi": "AIMLAPI_KEY", "useapi": "USEAPI_TOKEN", "fal": "FAL_KEY"}
    key = emu.env()[key_var[name]]
    own = [u for k, u in emu.base_urls.items() if k == name or (name == "fal" and k.startswith("fal_"))]
    with _provider(emu, name, client=client) as p:
        record = run_job(p, JobRequest(video, audio), tmp_path / "out.mp4")
        p.voices()
    assert record.sha256
    carrying = [r for r in sent if any(key in v for h, v in r.headers.items() if h.lower() in AUTH_HEADERS)]
    assert carrying, "the key was never sent"
    for r in carrying:
        assert any(str(r.url).startswith(base + "/") for base in own), f"key sent to {r.url}"
    downloads = [r for r in sent if str(r.url) == record.result_url]
    assert downloads and all(not any(h.lower() in AUTH_HEADERS for h in r.headers) for r in downloads)
    if name == "fal":
        cdn = [r for r in sent if str(r.url).endswith("/files/upload")]
        assert cdn and all(r.headers.get("authorization") and key not in r.headers["authorization"] for r in cdn)
    if name == "pixverse":
        traces = [r.headers["ai-trace-id"] for r in sent if "ai-trace-id" in r.headers]
        assert len(traces) == len(carrying) and len(set(traces)) == len(traces)  # fresh on every request


@pytest.mark.parametrize("name", ["pixverse", "useapi"])
def test_voice_lists_from_the_api(emu, name):
    with _provider(emu, name) as p:
        voices = {v.name: v.provider_id for v in p.voices()}
    assert voices["Emily"] == "1" and voices["Ethan"] == "14" and len(voices) >= 14


def test_useapi_max_jobs_is_the_concurrency(emu):
    assert _provider(emu, "useapi", max_jobs=2).max_concurrency == 2
    assert _provider(emu, "fal").max_concurrency is None
