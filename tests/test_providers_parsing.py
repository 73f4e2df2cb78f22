"""Pure protocol functions of the four adapters: envelopes, ids, status mapping, create classification."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import AuthError, BillingError, Moderated, ProviderError, ValidationError
from pipeline.providers import aimlapi, fal, pixverse, useapi
from pipeline.providers.base import JobState
from pipeline.providers.http import Lost, Refused

# --- PixVerse --------------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=2**63 - 1))
def test_pixverse_ids_survive_json_exactly(video_id):
    body = json.loads(json.dumps({"ErrCode": 0, "ErrMsg": "success", "Resp": {"video_id": video_id}}))
    env = pixverse.parse_envelope(body)
    assert pixverse.as_id(env.resp["video_id"]) == video_id
    sent = json.dumps({"video_media_id": pixverse.as_id(video_id)})
    assert f'"video_media_id": {video_id}' in sent  # a JSON number, all digits, no quotes


def test_pixverse_ids_refuse_floats_and_accept_digit_strings():
    assert pixverse.as_id(2.0**60) is None
    assert pixverse.as_id(True) is None
    assert pixverse.as_id("9007199254740993") == 9007199254740993


@pytest.mark.parametrize(
    "body",
    [
        {"ErrCode": 400017, "ErrMsg": "Invalid parameter", "Resp": {}},
        {"err_code": 400017, "err_msg": "Invalid parameter", "resp": None},
    ],
)
def test_pixverse_envelope_both_casings(body):
    env = pixverse.parse_envelope(body)
    assert (env.code, env.message) == (400017, "Invalid parameter")
    err = pixverse.envelope_error(env, "create")
    assert isinstance(err, ValidationError) and "Invalid parameter" in str(err) and err.exit_code == 6


@pytest.mark.parametrize(
    "code,kind",
    [
        (10001, AuthError),
        (10003, AuthError),
        (500043, BillingError),
        (500090, BillingError),
        (500054, Moderated),
        (400013, ValidationError),
        (999999, ProviderError),
    ],
)
def test_pixverse_error_codes(code, kind):
    err = pixverse.envelope_error(pixverse.Envelope(code, "msg", None), "create")
    assert type(err) is kind and err.code == code and err.provider == "pixverse"


@pytest.mark.parametrize(
    "http,body,expect",
    [
        (200, {"ErrCode": 0, "ErrMsg": "success", "Resp": {"video_id": 5}}, None),
        (200, {"ErrCode": 500044, "ErrMsg": "Reached the limit for concurrent generations.", "Resp": {}}, Refused),
        (429, None, Refused),
        (200, {"ErrCode": 400017, "ErrMsg": "Invalid parameter"}, ValidationError),
        (500, {"err_code": 400017, "err_msg": "bad speaker"}, ValidationError),
        (500, {"err_code": 500999, "err_msg": "internal"}, Lost),  # a 500 that may have made the job
        (502, None, Lost),
        (200, None, Lost),  # 200 without an envelope: unknowable
        (200, {"ErrCode": 500043, "ErrMsg": "no credits"}, BillingError),
    ],
)
def test_pixverse_create_classification(http, body, expect):
    verdict = pixverse.classify_create(http, body)
    assert (verdict is None) if expect is None else isinstance(verdict, expect)


@pytest.mark.parametrize(
    "resp,state,unconfirmed",
    [
        ({"status": 5}, JobState.RUNNING, False),
        (
            {"status": 1, "url": "https://x/a.mp4", "outputWidth": 1280, "outputHeight": 720, "size": 10},
            JobState.SUCCEEDED,
            False,
        ),
        ({"status": 1, "url": "https://x/a.mp4"}, JobState.RUNNING, True),  # sizes not reported: grace
        ({"status": 1, "url": "", "outputWidth": 1280, "outputHeight": 720}, JobState.RUNNING, True),
        ({"status": 1, "url": "https://x/a.mp4", "outputWidth": 0, "outputHeight": 0}, JobState.RUNNING, True),
        (
            {"status": 1, "url": "https://x/a.mp4", "outputWidth": 1280, "outputHeight": 720, "size": 0},
            JobState.RUNNING,
            True,
        ),
        ({"status": 7}, JobState.MODERATED, False),
        ({"status": 8}, JobState.FAILED, False),
        ({"status": 6}, JobState.FAILED, False),
        ({"status": 42}, JobState.RUNNING, False),  # unknown: keep polling
        (
            {"status": "1", "url": "https://x/a.mp4", "outputWidth": "640", "outputHeight": "480"},
            JobState.SUCCEEDED,
            False,
        ),
    ],
)
def test_pixverse_result_mapping(resp, state, unconfirmed):
    status = pixverse.parse_result(resp)
    assert status.state is state and status.unconfirmed is unconfirmed
    assert status.raw_status == str(resp["status"])
    if state is JobState.SUCCEEDED:
        assert status.result_url


# --- AI/ML API --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,state",
    [
        ({"id": "a", "status": "queued"}, JobState.QUEUED),
        ({"id": "a", "status": "waiting"}, JobState.QUEUED),
        ({"id": "a", "status": "generating"}, JobState.RUNNING),
        ({"id": "a", "status": "completed", "video": {"url": "https://cdn/x.mp4"}}, JobState.SUCCEEDED),
        ({"id": "a", "status": "succeeded", "video": {"url": "https://cdn/x.mp4"}}, JobState.SUCCEEDED),
        ({"id": "a", "status": "completed", "video": None}, JobState.RUNNING),
        (
            {
                "id": "a",
                "status": "completed",
                "video": {"url": "https://cdn/x.mp4"},
                "error": {"name": "Err", "message": "boom"},
            },
            JobState.FAILED,
        ),
        (
            {"id": "a", "status": "error", "error": {"name": "ModerationError", "message": "content moderation"}},
            JobState.MODERATED,
        ),
        ({"id": "a", "status": "error", "error": None}, JobState.FAILED),
        ({"id": "a", "status": "teleporting"}, JobState.RUNNING),
    ],
)
def test_aimlapi_status_mapping(body, state):
    status = aimlapi.parse_generation(body)
    assert status.state is state and status.raw_status == body["status"]
    if body["status"] == "completed" and not body.get("video"):
        assert status.unconfirmed


def test_aimlapi_credits_are_read():
    status = aimlapi.parse_generation({"id": "a", "status": "queued", "meta": {"usage": {"credits_used": 2000000}}})
    assert status.credits == 2000000


@pytest.mark.parametrize(
    "http,expect",
    [
        (200, None),
        (400, ValidationError),
        (401, AuthError),
        (403, BillingError),
        (429, Refused),
        (503, Refused),
        (500, Lost),
        (504, Lost),
        (404, ProviderError),
    ],
)
def test_aimlapi_create_classification(http, expect):
    verdict = aimlapi.classify_create(http, {"message": "m", "statusCode": http})
    assert (verdict is None) if expect is None else isinstance(verdict, expect)


@given(st.binary(max_size=64), st.binary(max_size=10), st.text(max_size=30))
def test_streamed_json_is_exact_and_decodes(tmp_path_factory, video, audio, text):
    d = tmp_path_factory.mktemp("dataurimedia")
    v, a = d / "v.mp4", d / "a.wav"
    v.write_bytes(video)
    a.write_bytes(audio)
    body = aimlapi.StreamedJson(
        {
            "model": aimlapi.MODEL,
            "video_url": aimlapi.media_field(v, None),
            "audio_url": aimlapi.media_field(a, None),
            "note": text,
        }
    )
    raw = b"".join(body.chunks())
    assert len(raw) == body.length
    doc = json.loads(raw)
    import base64

    assert doc["video_url"] == "data:video/mp4;base64," + base64.b64encode(video).decode()
    assert doc["audio_url"] == "data:audio/wav;base64," + base64.b64encode(audio).decode()
    assert doc["note"] == text


def test_streamed_json_slices_keep_base64_valid_across_chunks(tmp_path, monkeypatch):
    import base64

    monkeypatch.setattr(aimlapi, "B64_SLICE", 3 * 5)  # many slices for a small file
    data = bytes(range(256)) * 3 + b"xy"
    f = tmp_path / "v.mov"
    f.write_bytes(data)
    body = aimlapi.StreamedJson({"video_url": aimlapi.media_field(f, None)})
    chunks = list(body.chunks())
    assert max(len(c) for c in chunks) <= 4 * 5 + len(b'{"video_url":"')
    doc = json.loads(b"".join(chunks))
    assert base64.b64decode(doc["video_url"].split(",", 1)[1]) == data
    assert doc["video_url"].startswith("data:video/quicktime;base64,")


def test_aimlapi_uses_urls_when_given(tmp_path):
    f = tmp_path / "v.mp4"
    f.write_bytes(b"x")
    assert aimlapi.media_field(f, "https://cdn.example/v.mp4") == "https://cdn.example/v.mp4"


# --- useapi -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,state",
    [
        ({"video_status_name": "QUEUED", "video_status_final": False}, JobState.QUEUED),
        ({"video_status_name": "GENERATING", "video_status_final": False}, JobState.RUNNING),
        (
            {
                "video_status_name": "COMPLETED",
                "video_status_final": True,
                "url": "https://x/v.mp4",
                "output_width": 1280,
                "output_height": 720,
            },
            JobState.SUCCEEDED,
        ),
        ({"video_status_name": "COMPLETED", "video_status_final": False, "url": "https://x/v.mp4"}, JobState.RUNNING),
        ({"video_status_name": "COMPLETED", "video_status_final": True, "url": None}, JobState.RUNNING),
        (
            {
                "video_status_name": "COMPLETED",
                "video_status_final": True,
                "url": "https://x/v.mp4",
                "output_width": 0,
                "output_height": 0,
            },
            JobState.RUNNING,
        ),
        ({"video_status_name": "MODERATED", "video_status_final": True}, JobState.MODERATED),
        ({"video_status_name": "FAILED", "video_status_final": True, "error": "boom"}, JobState.FAILED),
        (
            {"video_status_name": " completed ", "video_status_final": True, "url": "https://x/v.mp4"},
            JobState.SUCCEEDED,
        ),
        ({"video_status_name": "WEIRD", "video_status_final": True}, JobState.FAILED),
        ({"video_status_name": "WEIRD", "video_status_final": False}, JobState.RUNNING),
        ({"video_status_name": "COMPLETED", "url": "https://x/v.mp4"}, JobState.SUCCEEDED),  # no final flag
        ({"video_status": 1, "video_status_final": True, "url": "https://x/v.mp4"}, JobState.SUCCEEDED),
        ({"video_status": 5}, JobState.RUNNING),
        ({"video_status": 7, "video_status_final": True}, JobState.MODERATED),
    ],
)
def test_useapi_status_mapping(body, state):
    assert useapi.parse_video(body).state is state


@pytest.mark.parametrize(
    "http,expect",
    [
        (200, None),
        (400, ValidationError),
        (401, AuthError),
        (412, BillingError),
        (422, Moderated),
        (429, Refused),
        (596, AuthError),
        (500, Lost),
    ],
)
def test_useapi_create_classification(http, expect):
    verdict = useapi.classify_create(http, {"error": "message here", "code": http})
    assert (verdict is None) if expect is None else isinstance(verdict, expect)
    if isinstance(verdict, Exception):
        assert "message here" in str(verdict)


# --- fal --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,state",
    [
        ({"status": "IN_QUEUE", "queue_position": 3}, JobState.QUEUED),
        ({"status": "IN_PROGRESS", "logs": []}, JobState.RUNNING),
        ({"status": "COMPLETED"}, JobState.SUCCEEDED),
        ({"status": "COMPLETED", "error": "Internal error", "error_type": "internal_error"}, JobState.FAILED),
        ({"status": "COMPLETED", "error": "flagged", "error_type": "content_policy_violation"}, JobState.MODERATED),
        ({"status": "SOMETHING_NEW"}, JobState.RUNNING),
    ],
)
def test_fal_queue_status_mapping(body, state):
    status = fal.parse_queue_status(body)
    assert status.state is state
    if state is JobState.SUCCEEDED:
        assert status.result_url is None  # the URL comes from response_url, not the status word


HTML_PAGE = ("text/html", b"<html><body>502 Bad Gateway</body></html>")


@pytest.mark.parametrize(
    "status,body,retry",
    [
        (500, HTML_PAGE, True),  # a gateway's page: ask again
        (502, ("application/json", b'{"detail": "Generation failed", "error_type": "runner_error"}'), False),
        (429, ("application/json", b'{"detail": "Too many requests"}'), True),
        (422, ("application/json", b'{"detail": [{"loc": ["body"], "msg": "bad", "type": "value_error"}]}'), False),
    ],
)
def test_fal_result_fetch_retries_gateways_not_fal_s_own_answers(status, body, retry):
    response = httpx.Response(status, headers={"Content-Type": body[0]}, content=body[1])
    assert fal.is_transient_result(response) is retry


@pytest.mark.parametrize(
    "body,timeout",
    [
        (HTML_PAGE, False),
        (("application/json", b'{"message": "Generation timeout", "statusCode": 504}'), True),
    ],
)
def test_aimlapi_504_is_a_generation_timeout_only_in_its_own_shape(body, timeout):
    response = httpx.Response(504, headers={"Content-Type": body[0]}, content=body[1])
    assert aimlapi.is_generation_timeout(response) is timeout and aimlapi.is_transient(response) is not timeout


@pytest.mark.parametrize(
    "status,body,retry",
    [
        (200, HTML_PAGE, True),  # not an envelope: a proxy's page
        (200, ("application/json", b'{"ErrCode": 400033, "ErrMsg": "trace", "Resp": null}'), True),
        (200, ("application/json", b'{"ErrCode": 400017, "ErrMsg": "bad", "Resp": null}'), False),
        (500, ("application/json", b'{"err_code": 500090, "err_msg": "credits", "resp": null}'), False),
        (500, ("application/json", b'{"err_code": 500, "err_msg": "oops", "resp": null}'), True),
        (404, HTML_PAGE, False),
    ],
)
def test_pixverse_transient_replies(status, body, retry):
    response = httpx.Response(status, headers={"Content-Type": body[0]}, content=body[1])
    assert pixverse.is_transient(response) is retry


def test_fal_output_needs_a_url():
    ok = fal.parse_output({"video": {"url": "https://v3.fal.media/x.mp4", "file_size": 10}})
    assert ok.state is JobState.SUCCEEDED and ok.result_url == "https://v3.fal.media/x.mp4"
    assert fal.parse_output({"video": {"url": "https://v3.fal.media/x.mp4", "file_size": 0}}).unconfirmed
    assert fal.parse_output({}).state is JobState.RUNNING


def test_fal_request_urls_only_on_the_queue_host():
    base = "https://queue.fal.run"
    body = {
        "status_url": "https://queue.fal.run/fal-ai/pixverse/requests/r1/status",
        "response_url": "https://evil.example/fal-ai/pixverse/requests/r1",
        "cancel_url": "https://queue.fal.run/fal-ai/pixverse/requests/r1/cancel",
    }
    urls = fal.request_urls(base, "r1", body)
    assert urls["status"] == body["status_url"]
    assert urls["response"] == "https://queue.fal.run/fal-ai/pixverse/requests/r1"  # documented, not evil
    assert "/lipsync" not in urls["cancel"]


@pytest.mark.parametrize(
    "http,body,expect",
    [
        (200, {"request_id": "r"}, None),
        (422, {"detail": [{"loc": ["body", "video_url"], "msg": "bad url"}]}, ValidationError),
        (401, {"detail": "no key"}, AuthError),
        (403, {"detail": "User is locked. Reason: Exhausted balance"}, BillingError),
        (429, {}, Refused),
        (500, {}, Lost),
    ],
)
def test_fal_create_classification(http, body, expect):
    verdict = fal.classify_create(http, body)
    assert (verdict is None) if expect is None else isinstance(verdict, expect)


def test_fal_token_parse():
    tok = fal.parse_token(
        {
            "token": "t",
            "token_type": "Bearer",
            "base_url": "https://v3.fal.media",
            "expires_at": "2030-01-01T00:00:00Z",
        },
        now=0,
    )
    assert tok.header == "Bearer t" and tok.base_url == "https://v3.fal.media" and tok.expires_at > 1.8e9
    assert fal.parse_token({"token": "t"}, now=0) is None


@pytest.mark.parametrize("change", [b"more bytes", None])
def test_data_uri_refuses_a_file_that_changed_after_sizing(tmp_path, change):
    f = tmp_path / "v.mp4"
    f.write_bytes(b"0123456789" * 10)
    body = aimlapi.StreamedJson({"video_url": aimlapi.media_field(f, None)})
    if change is None:
        f.write_bytes(b"short")
    else:
        with open(f, "ab") as out:
            out.write(change)
    with pytest.raises(ValidationError, match="changed"):
        b"".join(body.chunks())


# --- hostile numbers (issue 8, finding 3): Python's JSON reader takes Infinity, NaN, 1e999, huge ints ------

# (json.loads itself refuses integers over 4300 digits: those never reach a parse function)
HOSTILE_NUMBERS = [
    "Infinity",
    "-Infinity",
    "NaN",
    "1e999",
    "-1e999",
    "-5",
    "-0.5",
    "1" + "0" * 400,
    "9" * 4000,
    '"Infinity"',
    '"1e999"',
    '"' + "9" * 5000 + '"',
]


def _reply(template: str, literal: str):
    return json.loads(template.replace("N", literal))


@pytest.mark.parametrize("literal", HOSTILE_NUMBERS)
def test_hostile_numbers_never_crash_a_status_parse(literal):
    url = "https://cdn.example/r.mp4"
    statuses = [
        aimlapi.parse_generation(
            _reply(
                f'{{"status": "completed", "video": {{"url": "{url}", "file_size": N}},'
                ' "meta": {"usage": {"credits_used": N}}}',
                literal,
            )
        ),
        fal.parse_output(_reply(f'{{"video": {{"url": "{url}", "file_size": N}}}}', literal)),
        pixverse.parse_result(
            _reply(f'{{"status": 1, "url": "{url}", "outputWidth": N, "outputHeight": N, "size": N}}', literal)
        ),
        pixverse.parse_result(_reply(f'{{"status": N, "url": "{url}"}}', literal)),
        useapi.parse_video(
            _reply(
                f'{{"video_status_name": "COMPLETED", "url": "{url}", "output_width": N, "output_height": N}}',
                literal,
            )
        ),
        useapi.parse_video(_reply('{"video_status": N}', literal)),
    ]
    for status in statuses:
        assert status.width is None or 0 < status.width < 2**53
        assert status.height is None or 0 < status.height < 2**53
        assert status.credits is None or 0 <= status.credits < 2**53
    pixverse.parse_envelope(_reply('{"ErrCode": N, "ErrMsg": "x"}', literal))  # no exception either


@given(st.one_of(st.floats(), st.integers(), st.text(max_size=50), st.none(), st.booleans()))
def test_optional_numbers_are_finite_bounded_or_none(value):
    from pipeline.providers.base import MAX_REPLY_NUMBER, optional_float, optional_int

    for parsed in (optional_int(value), optional_float(value), optional_int(value, nonnegative=True)):
        assert parsed is None or abs(parsed) <= MAX_REPLY_NUMBER
    size = optional_int(value, nonnegative=True)
    assert size is None or size >= 0
