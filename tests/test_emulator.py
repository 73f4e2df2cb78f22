"""The provider emulator: each protocol's happy path with real rendered media, create counting, and faults."""

from __future__ import annotations

import gc
import http.server
import json
import socket
import subprocess
import threading
import time
import warnings

import httpx
import numpy as np
import pytest
from emulator_client import (
    create,
    create_body,
    headers,
    poll_once,
    poll_until_final,
    result_url,
    run_job,
    status_word,
    submit,
    upload,
)
from media import make_audio, make_video, media_info

from pipeline.emulator import Emulator, EmulatorSettings
from pipeline.errors import ToolError
from pipeline.ffmpeg import ffmpeg_exe

PROVIDERS = ["pixverse", "aimlapi", "useapi", "fal"]
AUDIO_S = 1.6
# a cheap authenticated GET per provider (an unknown job is fine: only the gate's answer matters)
STATUS_PATHS = {
    "pixverse": "/openapi/v2/video/lip_sync/tts_list",
    "aimlapi": "/v2/video/generations?generation_id=x",
    "useapi": "/v2/pixverse/videos/voices",
    "fal": "/fal-ai/pixverse/requests/x/status",
}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("emulator-media")
    return {
        "video": make_video(d / "video.mp4", seconds=1.0, width=320, height=240),
        "wide": make_video(d / "wide.mov", seconds=1.0, width=1280, height=960, audio=False),
        "audio": make_audio(d / "speech.wav", seconds=AUDIO_S, rate=24000),
        "mp3": make_audio(d / "speech.mp3", seconds=AUDIO_S, rate=24000),
    }


@pytest.fixture
def emu():
    with Emulator(EmulatorSettings(latency_s=0.3, queue_s=0.1)) as e:
        yield e


@pytest.mark.parametrize("provider", ["pixverse", "useapi"])
def test_multipart_forms_leave_no_file_open(emu, media, provider):
    """The emulator closes the spooled copy of every multipart part it reads (PixVerse's upload; useapi's
    lip-sync form), rather than leaving it to the garbage collector."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        if provider == "pixverse":
            assert upload(emu, provider, media["video"])
        else:
            with open(media["audio"], "rb") as voice:
                reply = httpx.post(
                    f"{emu.base_urls['useapi']}/v2/pixverse/videos/lipsync",
                    headers=headers(emu, provider),
                    data={"video_path": "upload/0/nothing.mp4", "prompt": "Hello"},
                    files={"attachment": ("speech.wav", voice, "audio/wav")},  # a part it has no use for
                )
            assert reply.status_code == 400  # the form was read: the video was never uploaded
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def decode_mono(path, rate: int = 24000) -> np.ndarray:
    """The first audio stream of `path` decoded by ffmpeg to mono float samples."""
    raw = subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-ac",
            "1",
            "-ar",
            str(rate),
            "-f",
            "s16le",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype="<i2") / 32768.0


def lag_ms(reference: np.ndarray, delayed: np.ndarray, rate: int = 24000) -> float:
    """How much later `delayed` is than `reference`, by cross-correlation."""
    n = min(len(reference), len(delayed))
    spectrum = np.fft.rfft(delayed[:n], 2 * n) * np.conj(np.fft.rfft(reference[:n], 2 * n))
    corr = np.fft.irfft(spectrum)
    lag = int(np.argmax(np.concatenate([corr[-n + 1 :], corr[:n]]))) - (n - 1)
    return 1000 * lag / rate


# ---- happy paths: a real mp4 with the submitted audio ---------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_audio_job_returns_the_video_with_the_submitted_audio(emu, media, provider, tmp_path):
    out = run_job(emu, provider, media["video"], audio=media["audio"], dst=tmp_path / "result.mp4")
    info = media_info(out)
    general, video, audio = info["General"][0], info["Video"][0], info["Audio"][0]
    assert general.format == "MPEG-4"
    assert video.format == "AVC" and (video.width, video.height) == (320, 240)
    assert audio.format == "AAC"
    assert float(general.duration) / 1000 == pytest.approx(AUDIO_S, abs=0.1)  # audio length, video looped
    assert abs(lag_ms(decode_mono(media["audio"]), decode_mono(out))) <= 3
    assert emu.accepted_creates(provider) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tts_job_speaks_the_text(emu, media, provider, tmp_path):
    text = "Through the forest, past the roots, I have got to get there fast."
    out = run_job(emu, provider, media["video"], text=text, speaker="Oliver", dst=tmp_path / "tts.mp4")
    info = media_info(out)
    seconds = float(info["General"][0].duration) / 1000
    assert 1.5 < seconds < 12
    assert np.sqrt(np.mean(decode_mono(out) ** 2)) > 0.01  # not silence


def test_output_is_scaled_to_the_provider_size_never_up(emu, media, tmp_path):
    out = run_job(emu, "useapi", media["wide"], audio=media["mp3"], dst=tmp_path / "wide.mp4")
    video = media_info(out)["Video"][0]
    assert (video.width, video.height) == (960, 720)


def test_status_reports_what_the_download_holds(emu, media, tmp_path):
    sub = submit(emu, "pixverse", media["wide"], audio=media["audio"])
    resp = poll_until_final(emu, sub)[-1].json()["Resp"]
    data = httpx.get(resp["url"]).content
    (tmp_path / "r.mp4").write_bytes(data)
    video = media_info(tmp_path / "r.mp4")["Video"][0]
    assert resp["status"] == 1 and resp["size"] == len(data) > 0
    assert (resp["outputWidth"], resp["outputHeight"]) == (video.width, video.height) == (960, 720)


# ---- clock ----------------------------------------------------------------------------------------------


@pytest.fixture
def slow_emu():
    """Phases long enough that a loaded machine cannot skip one between two polls."""
    with Emulator(EmulatorSettings(latency_s=1.5, queue_s=1.5)) as e:
        yield e


def test_jobs_pass_through_queue_and_generation_before_finishing(slow_emu, media):
    sub = submit(slow_emu, "fal", media["video"], audio=media["audio"])
    words = [status_word("fal", r) for r in poll_until_final(slow_emu, sub)]
    assert words[0] == "IN_QUEUE" and "IN_PROGRESS" in words and words[-1] == "COMPLETED"
    assert words.index("IN_PROGRESS") > 0


def test_useapi_answers_404_until_the_video_is_final(slow_emu, media):
    sub = submit(slow_emu, "useapi", media["video"], audio=media["audio"])
    replies = poll_until_final(slow_emu, sub)
    assert replies[0].status_code == 404 and replies[0].json()["code"] == 404
    assert replies[-1].json()["video_status_final"] is True and replies[-1].json()["url"]


def test_stuck_jobs_never_finish(emu, media):
    emu.faults("aimlapi").stuck = True
    sub = submit(emu, "aimlapi", media["video"], audio=media["audio"])
    time.sleep(0.8)  # more than queue + latency
    assert poll_once(emu, sub).json()["status"] == "generating"


# ---- create counting and refused creates -----------------------------------------------------------------

REFUSAL = {  # provider -> (HTTP status, body check) for a rate-limited create
    "pixverse": (200, lambda d: d["ErrCode"] == 500044),
    "aimlapi": (429, lambda d: d["statusCode"] == 429 and {"message", "path", "requestId", "timestamp"} <= set(d)),
    "useapi": (429, lambda d: d["code"] == 429 and d["error"]),
    "fal": (429, lambda d: "detail" in d),
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rate_limited_creates_are_refused_and_not_counted(emu, media, provider):
    video = upload(emu, provider, media["video"])
    audio = upload(emu, provider, media["audio"])
    emu.faults(provider).rate_limit_creates = 2
    for _ in range(2):
        refused = create(emu, provider, create_body(provider, video, audio, None, None))
        status, check = REFUSAL[provider]
        assert refused.reply.status_code == status and check(refused.reply.json())
        assert refused.job_id is None
    accepted = create(emu, provider, create_body(provider, video, audio, None, None))
    assert accepted.job_id is not None
    assert emu.accepted_creates(provider) == 1 and len(emu.jobs(provider)) == 1


BILLING = {
    "pixverse": (200, lambda d: d["ErrCode"] == 500090),
    "aimlapi": (403, lambda d: d["statusCode"] == 403),
    "useapi": (412, lambda d: d["code"] == 412),
    "fal": (403, lambda d: "detail" in d),
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_out_of_credits_refuses_creates_with_the_billing_error(emu, media, provider):
    emu.faults(provider).out_of_credits = True
    sub = submit(emu, provider, media["video"], audio=media["audio"])
    status, check = BILLING[provider]
    assert sub.reply.status_code == status and check(sub.reply.json())
    assert emu.accepted_creates(provider) == 0


ACCOUNT = {
    "pixverse": (200, lambda d: d["ErrCode"] == 10001),
    "aimlapi": (403, lambda d: d["statusCode"] == 403),
    "useapi": (596, lambda d: d["code"] == 596 and "pending error" in d["error"]),
    "fal": (403, lambda d: "locked" in d["detail"]),
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_account_errors_refuse_every_call(emu, media, provider):
    emu.faults(provider).account_error = True
    status, check = ACCOUNT[provider]
    url = emu.base_urls["fal_queue" if provider == "fal" else provider] + STATUS_PATHS[provider]
    reply = httpx.get(url, headers=headers(emu, provider))
    assert reply.status_code == status and check(reply.json())
    emu.faults(provider).account_error = False
    after = httpx.get(url, headers=headers(emu, provider))
    assert not (after.status_code == status and check(after.json()))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dropped_create_reply_is_a_transport_error_but_the_job_exists(emu, media, provider):
    video = upload(emu, provider, media["video"])
    audio = upload(emu, provider, media["audio"])
    emu.faults(provider).drop_after_create = 1
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        create(emu, provider, create_body(provider, video, audio, None, None))
    assert emu.accepted_creates(provider) == 1
    job = emu.jobs(provider)[0]
    sub = create(emu, provider, create_body(provider, video, audio, None, None))  # the fault was used up
    assert sub.job_id is not None and str(sub.job_id) != job.job_id
    assert emu.accepted_creates(provider) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_gateway_error_after_an_accepted_create_leaves_the_job_behind(emu, media, provider):
    video = upload(emu, provider, media["video"])
    audio = upload(emu, provider, media["audio"])
    emu.faults(provider).error_after_create = 1
    lost = create(emu, provider, create_body(provider, video, audio, None, None))
    assert lost.reply.status_code == 502 and lost.job_id is None
    answered = create(emu, provider, create_body(provider, video, audio, None, None))
    assert answered.job_id is not None
    jobs = emu.jobs(provider)
    assert emu.accepted_creates(provider) == 2
    assert jobs[0].answer_lost and "502" in jobs[0].answer_lost and jobs[1].answer_lost is None


def test_a_stalled_job_runs_long_then_finishes(emu, media):
    from pipeline.emulator.jobs import Phase, phase_at

    emu.faults("aimlapi").stall_jobs, emu.faults("aimlapi").stall_s = 1, 60.0
    stalled = submit(emu, "aimlapi", media["video"], audio=media["audio"])
    normal = submit(emu, "aimlapi", media["video"], audio=media["audio"])
    assert status_word("aimlapi", poll_until_final(emu, normal)[-1]) != "generating"
    assert status_word("aimlapi", poll_once(emu, stalled)) == "generating"  # the next job was not held up
    job = emu.jobs("aimlapi")[0]
    job.render.result(timeout=30)
    assert phase_at(job, job.created_at + job.queue_s + 61.0) is Phase.SUCCEEDED  # it does end


def test_useapi_refuses_creates_beyond_max_jobs(media):
    with Emulator(EmulatorSettings(latency_s=3.0)) as emu:  # long enough that no job ends mid-test
        _fill_useapi_account(emu, media)


def _fill_useapi_account(emu, media):
    video = upload(emu, "useapi", media["video"])
    audio = upload(emu, "useapi", media["audio"])
    body = create_body("useapi", video, audio, None, None) | {"maxJobs": 2}
    running = [create(emu, "useapi", body) for _ in range(2)]
    assert all(sub.job_id for sub in running)
    busy = create(emu, "useapi", body)
    assert busy.reply.status_code == 429 and "busy" in busy.reply.json()["error"]
    assert emu.accepted_creates("useapi") == 2
    other_account = create(emu, "useapi", body | {"email": "second@example.com"})
    assert other_account.job_id is not None and "second@example.com" in other_account.job_id
    poll_until_final(emu, running[0])
    assert create(emu, "useapi", body).job_id is not None  # a slot is free again


# ---- failures, moderation, lies -------------------------------------------------------------------------

FAILED = {
    "pixverse": lambda r: r.json()["Resp"]["status"] == 8,
    "aimlapi": lambda r: r.json()["status"] == "error" and r.json()["error"]["message"],
    "useapi": lambda r: r.json()["video_status_name"] == "FAILED" and r.json()["video_status_final"],
    "fal": lambda r: r.json()["status"] == "COMPLETED" and r.json()["error"],
}
MODERATED = {
    "pixverse": lambda r: r.json()["Resp"]["status"] == 7,
    "aimlapi": lambda r: r.json()["status"] == "error" and r.json()["error"]["name"],
    "useapi": lambda r: r.json()["video_status_name"] == "MODERATED",
    "fal": lambda r: r.json()["error_type"] == "content_policy_violation",
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_generation_failure_ends_the_job_failed(emu, media, provider):
    emu.faults(provider).fail_generation = True
    sub = submit(emu, provider, media["video"], audio=media["audio"])
    assert FAILED[provider](poll_until_final(emu, sub)[-1])
    assert emu.accepted_creates(provider) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_moderation_ends_the_job_moderated(emu, media, provider):
    emu.faults(provider).moderate = True
    sub = submit(emu, provider, media["video"], audio=media["audio"])
    assert MODERATED[provider](poll_until_final(emu, sub)[-1])


def test_fal_failed_run_has_no_output(emu, media):
    emu.faults("fal").fail_generation = True
    sub = submit(emu, "fal", media["video"], audio=media["audio"])
    poll_until_final(emu, sub)
    r = httpx.get(sub.urls["response_url"], headers=headers(emu, "fal"))
    assert r.status_code >= 400 and r.headers["x-fal-error-type"]


def test_useapi_moderates_tts_prompts_at_create(emu, media):
    emu.faults("useapi").moderate = True
    sub = submit(emu, "useapi", media["video"], text="Hello there", speaker="Jack")
    assert sub.reply.status_code == 422 and sub.reply.json()["error"]
    assert emu.accepted_creates("useapi") == 0


def test_status_flaps_before_the_truth(emu, media):
    for provider in PROVIDERS:
        emu.faults(provider).flap_status = True
    lies = {}
    for provider in PROVIDERS:
        sub = submit(emu, provider, media["video"], audio=media["audio"])
        words = [status_word(provider, r) for r in poll_until_final(emu, sub)]
        lies[provider] = words
    assert "1" in lies["pixverse"][:-1] and lies["pixverse"][-1] == "1"  # a status 1 without url came first
    assert "waiting" in lies["aimlapi"]
    assert "COMPLETED?" in lies["useapi"]
    fal = lies["fal"]
    assert fal[-1] == "COMPLETED"


def test_fal_goes_back_in_progress_once_after_completed(emu, media):
    emu.faults("fal").flap_status = True
    sub = submit(emu, "fal", media["video"], audio=media["audio"])
    words = [status_word("fal", r) for r in poll_until_final(emu, sub)]
    again = [status_word("fal", poll_once(emu, sub)) for _ in range(3)]
    assert words[-1] == "COMPLETED" and again == ["IN_PROGRESS", "COMPLETED", "COMPLETED"]


def test_truncated_download_breaks_before_content_length(emu, media):
    sub = submit(emu, "pixverse", media["video"], audio=media["audio"])
    url = result_url(emu, sub, poll_until_final(emu, sub)[-1])
    emu.faults("pixverse").truncate_downloads = 1
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.get(url)
    whole = httpx.get(url)
    assert whole.status_code == 200 and len(whole.content) == int(whole.headers["content-length"])


def test_downloads_resume_with_range(emu, media):
    sub = submit(emu, "aimlapi", media["video"], audio=media["audio"])
    url = result_url(emu, sub, poll_until_final(emu, sub)[-1])
    whole = httpx.get(url).content
    tail = httpx.get(url, headers={"Range": "bytes=100-"})
    assert tail.status_code == 206 and tail.content == whole[100:]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_server_errors_answer_5xx_then_recover(emu, provider):
    emu.faults(provider).server_errors = 3
    url = emu.base_urls["fal_queue" if provider == "fal" else provider] + STATUS_PATHS[provider]
    codes = [httpx.get(url, headers=headers(emu, provider)).status_code for _ in range(4)]
    assert all(code >= 500 for code in codes[:3]) and codes[3] < 500


def test_pixverse_5xx_sometimes_uses_lower_case_keys(emu):
    emu.faults("pixverse").server_errors = 2
    url = emu.base_urls["pixverse"] + "/openapi/v2/video/lip_sync/tts_list"
    bodies = [httpx.get(url, headers=headers(emu, "pixverse")).json() for _ in range(2)]
    assert {"err_code", "err_msg"} <= set(bodies[0]) and {"ErrCode", "ErrMsg"} <= set(bodies[1])


def test_slow_replies_are_slow(emu):
    emu.faults("useapi").slow_reply_s = 0.5
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(emu.base_urls["useapi"] + "/v2/pixverse/videos/voices", headers=headers(emu, "useapi"), timeout=0.1)


@pytest.mark.parametrize("offset_ms", [0, 40, 120, -60])
def test_audio_offset_delays_the_result_audio(emu, media, offset_ms, tmp_path):
    emu.faults("fal").audio_offset_ms = offset_ms
    out = run_job(emu, "fal", media["video"], audio=media["audio"], dst=tmp_path / "offset.mp4")
    assert lag_ms(decode_mono(media["audio"]), decode_mono(out)) == pytest.approx(offset_ms, abs=3)


@pytest.fixture
def callback_sink():
    """A loopback server that records the JSON bodies POSTed to it."""
    received: list[dict] = []

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def _wait_for(received: list, n: int = 1) -> list:
    deadline = time.monotonic() + 20
    while len(received) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return received


def test_useapi_calls_reply_url_when_the_video_is_final(emu, media, callback_sink):
    url, received = callback_sink
    video, audio = upload(emu, "useapi", media["video"]), upload(emu, "useapi", media["audio"])
    body = create_body("useapi", video, audio, None, None) | {"replyUrl": url, "replyRef": "shot-12"}
    sub = create(emu, "useapi", body)
    [called] = _wait_for(received)
    assert called["video_id"] == sub.job_id and called["replyRef"] == "shot-12"
    assert called["video_status_final"] is True and called["video_status_name"] == "COMPLETED" and called["url"]


def test_fal_webhook_reports_errors_too(emu, media, callback_sink):
    url, received = callback_sink
    emu.faults("fal").fail_generation = True
    body = create_body("fal", upload(emu, "fal", media["video"]), upload(emu, "fal", media["audio"]), None, None)
    r = httpx.post(
        emu.base_urls["fal_queue"] + "/fal-ai/pixverse/lipsync",
        params={"fal_webhook": url},
        json=body,
        headers=headers(emu, "fal"),
    )
    [called] = _wait_for(received)
    assert called["request_id"] == r.json()["request_id"] and called["status"] == "ERROR" and called["error"]


# ---- PixVerse specifics ---------------------------------------------------------------------------------


def test_pixverse_ids_do_not_survive_a_float(emu, media):
    sub = submit(emu, "pixverse", media["video"], audio=media["audio"])
    raw = sub.reply.text
    video_id = json.loads(raw)["Resp"]["video_id"]
    assert isinstance(video_id, int) and video_id > 2**53 and int(float(video_id)) != video_id
    assert str(video_id) in raw
    rounded = int(float(video_id))
    r = httpx.get(f"{emu.base_urls['pixverse']}/openapi/v2/video/result/{rounded}", headers=headers(emu, "pixverse"))
    assert r.json()["ErrCode"] != 0


def test_pixverse_trace_id_must_be_fresh(emu):
    url = emu.base_urls["pixverse"] + "/openapi/v2/video/lip_sync/tts_list"
    h = headers(emu, "pixverse")
    assert httpx.get(url, headers=h).json()["ErrCode"] == 0
    again = httpx.get(url, headers=h)
    assert again.status_code == 200 and again.json()["ErrCode"] == 400033
    missing = httpx.get(url, headers={"API-KEY": h["API-KEY"]}).json()
    assert missing["ErrCode"] == 400033


def test_pixverse_tts_list_pages(emu):
    url = emu.base_urls["pixverse"] + "/openapi/v2/video/lip_sync/tts_list"
    pages = [
        httpx.get(url, params={"page_num": n, "page_size": 6}, headers=headers(emu, "pixverse")).json()["Resp"]
        for n in (1, 2, 3)
    ]
    ids = [s["speaker_id"] for p in pages for s in p["data"]]
    assert pages[0]["total"] == 15 and len(ids) == 15 == len(set(ids))
    assert all(isinstance(i, str) for i in ids)


def test_useapi_voices_carry_stray_whitespace(emu):
    voices = httpx.get(emu.base_urls["useapi"] + "/v2/pixverse/videos/voices", headers=headers(emu, "useapi"))
    tts = voices.json()["tts_list"]
    assert len(tts) == 15 and all({"speaker_id", "url", "display_name"} <= set(v) for v in tts)
    values = [value for voice in tts for value in (voice["speaker_id"], voice["display_name"])]
    assert any(value != value.strip() for value in values)


def test_api_keys_are_checked_when_configured(media):
    keys = {"pixverse": "pk", "aimlapi": "ak", "useapi": "uk", "fal": "fk"}
    with Emulator(EmulatorSettings(latency_s=0.1, api_keys=keys)) as emu:
        assert emu.env()["FAL_KEY"] == "fk"
        good = httpx.get(emu.base_urls["useapi"] + "/v2/pixverse/videos/voices", headers=headers(emu, "useapi"))
        bad = httpx.get(emu.base_urls["useapi"] + "/v2/pixverse/videos/voices", headers={"Authorization": "Bearer no"})
        fal_bad = httpx.post(
            emu.base_urls["fal_queue"] + "/fal-ai/pixverse/lipsync", json={}, headers={"Authorization": "Key wrong"}
        )
        pix_bad = httpx.get(
            emu.base_urls["pixverse"] + "/openapi/v2/video/lip_sync/tts_list",
            headers={**headers(emu, "pixverse"), "API-KEY": "wrong"},
        )
    assert good.status_code == 200
    assert bad.status_code == 401 and bad.json() == {"error": "Unauthorized", "code": 401}
    assert fal_bad.status_code == 401
    assert pix_bad.json()["ErrCode"] == 10003


def test_env_points_at_the_running_emulator(emu):
    env = emu.env()
    assert env["LIPSYNC_PIXVERSE_BASE_URL"] == emu.root + "/pixverse"
    assert env["LIPSYNC_FAL_QUEUE_URL"] == emu.root + "/fal/queue"
    assert env["LIPSYNC_FAL_STORAGE_URL"] == emu.root + "/fal/rest"
    assert all(env[k] for k in ("PIXVERSE_API_KEY", "AIMLAPI_KEY", "USEAPI_TOKEN", "FAL_KEY"))


def test_a_busy_port_is_a_clear_error_and_leaves_nothing_behind():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        emu = Emulator(EmulatorSettings(port=taken.getsockname()[1]))
        with pytest.raises(ToolError, match="could not listen"):
            emu.start()
    assert not emu.workdir.exists()


@pytest.mark.parametrize(
    "name, video_kw, audio_kw, display",
    [
        ("rotated.mp4", {"rotate": 90}, {}, (240, 320)),
        ("odd.mov", {"width": 321, "height": 181, "vfr": True}, {}, (320, 180)),
        ("hevc10.mov", {"vcodec": "libx265", "pix_fmt": "yuv420p10le"}, {"channels": 6, "bit_depth": 24}, (320, 240)),
        ("cover.mp4", {"cover_art": True}, {"suffix": ".mp3", "cover_art": True}, (320, 240)),
    ],
)
def test_real_world_inputs_render(emu, tmp_path, name, video_kw, audio_kw, display):
    video = make_video(tmp_path / name, seconds=0.6, **video_kw)
    audio = make_audio(tmp_path / f"voice{audio_kw.pop('suffix', '.wav')}", seconds=1.0, rate=48000, **audio_kw)
    out = run_job(emu, "useapi", video, audio=audio, dst=tmp_path / "result.mp4")
    info = media_info(out)
    assert (info["Video"][0].width, info["Video"][0].height) == display
    assert info["Audio"][0].format == "AAC" and len(info["Video"]) == 1
    assert float(info["General"][0].duration) / 1000 == pytest.approx(1.0, abs=0.1)


def test_a_client_hanging_up_is_not_logged_as_an_emulator_error(emu):
    """A killed client (crash tests, `make chaos`) must not print tracebacks; a real handler error still does."""
    import logging
    import sys

    from starlette.requests import ClientDisconnect

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except type(exc):
            return logging.LogRecord(
                "uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application", None, sys.exc_info()
            )

    uvicorn_errors = logging.getLogger("uvicorn.error")
    assert not uvicorn_errors.filter(record(ClientDisconnect()))
    assert uvicorn_errors.filter(record(RuntimeError("a real bug")))
