"""fal's status stream over real HTTP: followed against the emulator, and the polling fallback when it breaks,
stalls or turns hostile (endless events, an endless event, silence, not an event stream)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import itertools
import time

import pytest
from media import media_info
from provider_kit import create_job, recording_client, serve_app, tiny_media
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pipeline.emulator import Emulator, EmulatorSettings
from pipeline.errors import JobTimeout
from pipeline.providers import JobHandle, JobRequest, JobState, PollPolicy, RetryPolicy, get_provider, wait_for_job
from pipeline.providers.fal import STATUS_STREAM, stream_url

POLL = PollPolicy(initial=0.05, factor=1.5, maximum=0.25, timeout=30)
RETRY = RetryPolicy(attempts=3, initial=0.02, maximum=0.1, max_retry_after=0.2)


@pytest.fixture(scope="module")
def emu():
    with Emulator(EmulatorSettings(latency_s=0.6, queue_s=0.2, output_short_side=96)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return tiny_media(tmp_path_factory.mktemp("stream-media"))


@pytest.fixture(autouse=True)
def clean(emu):
    emu.faults("fal").clear()
    yield
    emu.faults("fal").clear()


def _fal(base_urls, client=None, poll=POLL, credential="test-fal-key"):
    return get_provider("fal", credential=credential, base_urls=base_urls, poll=poll, retry=RETRY, client=client)


def _paths(sent):
    return [(r.method, r.url.path) for r in sent]


def _assert_video(provider, status, folder):
    got = provider.download(status.result_url, folder / "out.mp4", max_bytes=10**8)
    assert hashlib.sha256(got.path.read_bytes()).hexdigest() == got.sha256
    assert media_info(got.path)["Video"][0].width > 0


def test_a_fal_job_is_followed_on_its_status_stream_without_polling(emu, media, tmp_path):
    client, sent = recording_client()
    seen = []
    with _fal(emu.base_urls, client) as fal:
        handle = create_job(fal, JobRequest(*media))
        status = wait_for_job(fal, handle, on_status=seen.append)
        _assert_video(fal, status, tmp_path)
    paths = _paths(sent)
    streams = [p for m, p in paths if p.endswith("/status/stream")]
    assert len(streams) == 1 and not [p for m, p in paths if p.endswith("/status")]  # no poll at all
    assert paths.count(("GET", handle.urls["response"].split(emu.root)[1])) == 1  # the result, once
    assert [s.raw_status for s in seen][:2] == ["IN_QUEUE", "IN_PROGRESS"]
    assert seen[-1].state is JobState.SUCCEEDED and seen[-1] == status
    stream_request = next(r for r in sent if r.url.path.endswith("/status/stream"))
    assert str(stream_request.url).startswith(emu.base_urls["fal_queue"] + "/")
    assert stream_request.headers["authorization"] == "Key test-fal-key"
    assert fal.durations.estimate().samples == 1  # the stream's "done" taught the estimator too


@pytest.mark.parametrize("fault", ["break_status_streams", "server_errors"])
def test_a_broken_stream_falls_back_to_polling_and_completes(emu, media, tmp_path, fault):
    client, sent = recording_client()
    seen = []
    with _fal(emu.base_urls, client) as fal:
        handle = create_job(fal, JobRequest(*media))
        setattr(emu.faults("fal"), fault, 1)
        status = wait_for_job(fal, handle, on_status=seen.append)
        _assert_video(fal, status, tmp_path)
    assert getattr(emu.faults("fal"), fault) == 0
    paths = [p for _, p in _paths(sent)]
    first_poll = next(i for i, p in enumerate(paths) if p.endswith("/status"))
    assert paths.index(next(p for p in paths if p.endswith("/status/stream"))) < first_poll
    assert seen[-1].state is JobState.SUCCEEDED


def test_a_stuck_job_on_a_stream_times_out_within_the_bound(emu, media):
    emu.faults("fal").stuck = True
    bound = 1.5
    client, sent = recording_client()
    with _fal(emu.base_urls, client, poll=PollPolicy(initial=0.05, maximum=0.3, timeout=bound)) as fal:
        handle = create_job(fal, JobRequest(*media))
        start = time.monotonic()
        with pytest.raises(JobTimeout) as info:
            wait_for_job(fal, handle)
        waited = time.monotonic() - start
    assert bound <= waited < bound + 5
    assert "cancel requested" in str(info.value)
    assert any(r.url.path.endswith("/status/stream") for r in sent)


def test_the_stream_is_the_status_path_plus_stream_with_its_query_kept():
    assert (
        stream_url("https://q.example/fal-ai/pixverse/requests/r1/status?x=1")
        == "https://q.example/fal-ai/pixverse/requests/r1/status/stream?x=1"
    )


# ---- a hostile queue host ------------------------------------------------------------------------------


class Hostile:
    """A fal queue whose status stream misbehaves as `stream` says; its plain status says `final`."""

    def __init__(self, stream, final="COMPLETED"):
        self.stream, self.final = stream, final
        self.polls = 0

    async def status(self, request):
        self.polls += 1
        return JSONResponse({"status": self.final}, status_code=200 if self.final == "COMPLETED" else 202)

    async def status_stream(self, request):
        return self.stream(self)

    async def result(self, request):
        return JSONResponse({"video": {"url": "https://cdn.example.com/out.mp4", "file_size": 1234}})

    async def cancel(self, request):
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    def app(self):
        base = "/fal-ai/pixverse/requests/r1"
        return Starlette(
            routes=[
                Route(f"{base}/status", self.status),
                Route(f"{base}/status/stream", self.status_stream),
                Route(f"{base}/cancel", self.cancel, methods=["PUT"]),
                Route(base, self.result),
            ]
        )


def _events(host, lines):
    async def gen():
        for line in lines:
            yield line
            await asyncio.sleep(0)

    return StreamingResponse(gen(), media_type="text/event-stream")


def _keepalives(host):
    async def comments():
        while True:
            yield ": keepalive\n\n"
            await asyncio.sleep(0.05)

    return StreamingResponse(comments(), media_type="text/event-stream")


def _wait_on(host, poll=PollPolicy(initial=0.05, maximum=0.1, timeout=30), sleep=time.sleep):
    seen = []
    with serve_app(host.app()) as url, _fal({"fal_queue": url, "fal_storage": url}, poll=poll) as fal:
        base = f"{url}/fal-ai/pixverse/requests/r1"
        handle = JobHandle("fal", "r1", {"status": f"{base}/status", "response": base, "cancel": f"{base}/cancel"})
        try:
            return wait_for_job(fal, handle, on_status=seen.append, sleep=sleep), seen
        finally:
            host.seen = seen


def test_an_endless_flood_of_events_is_cut_off_and_polled_instead():
    flood = (f'data: {{"status": "IN_QUEUE", "queue_position": {n}}}\n\n' for n in itertools.count())
    host = Hostile(lambda h: _events(h, flood))
    status, seen = _wait_on(host)
    assert status.state is JobState.SUCCEEDED and host.polls >= 1
    streamed = [s for s in seen if s.raw_status == "IN_QUEUE"]
    assert len(streamed) == STATUS_STREAM.max_events  # each recorded, then no more


def test_an_endless_event_is_refused_at_its_cap_and_polled_instead():
    huge = itertools.chain(["data: "], itertools.repeat("x" * 65536))
    host = Hostile(lambda h: _events(h, huge))
    status, seen = _wait_on(host)
    assert status.state is JobState.SUCCEEDED and host.polls >= 1 and len(seen) == 1


@pytest.mark.parametrize(
    "reply",
    [
        lambda h: JSONResponse({"status": "IN_PROGRESS"}),  # not an event stream
        lambda h: _events(h, ["data: {not json\n\n"]),  # a malformed event
        lambda h: _events(h, ['data: ["IN_PROGRESS"]\n\n']),  # not a status object
        lambda h: _events(h, ['data: {"status": "IN_PROGRESS"}\n\n']),  # closed before the end
        lambda h: Response("gone", status_code=404),
        lambda h: Response(
            gzip.compress(b'data: {"status": "IN_PROGRESS"}\n\n'),  # compressed
            headers={"Content-Encoding": "gzip", "Content-Type": "text/event-stream"},
        ),
    ],
)
def test_a_stream_that_cannot_be_followed_falls_back_to_polling(reply):
    host = Hostile(reply)
    status, _ = _wait_on(host)
    assert status.state is JobState.SUCCEEDED and host.polls >= 1


def test_a_silent_stream_on_a_job_that_never_ends_times_out_within_the_bound():
    host = Hostile(_keepalives, final="IN_PROGRESS")
    bound = 1.0
    start = time.monotonic()
    with pytest.raises(JobTimeout):
        _wait_on(host, PollPolicy(initial=0.05, maximum=0.1, timeout=bound))
    waited = time.monotonic() - start
    assert bound <= waited < bound + 5
    assert host.polls == 0  # the stream kept the whole wait: no poll was needed to stay bounded
    assert host.seen == []


def test_a_stop_request_ends_a_quiet_stream_at_its_next_keepalive():
    """A batch's interruptible sleep raises on a stop request; the stream calls it whenever bytes arrive."""

    class Stop(Exception):
        pass

    host = Hostile(_keepalives, final="IN_PROGRESS")
    calls = []

    def sleep(seconds):
        calls.append(seconds)
        if len(calls) == 3:
            raise Stop()

    with pytest.raises(Stop):
        _wait_on(host, sleep=sleep)
    assert calls == [0, 0, 0] and host.polls == 0 and host.seen == []
