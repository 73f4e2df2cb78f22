"""The registry: base URL precedence (config > env > real host), documented paths appended, bad URLs refused."""

from __future__ import annotations

import pytest
from provider_kit import Reply, serve

from pipeline.errors import ConfigError, ValidationError
from pipeline.limits import PROVIDERS as LIMIT_TABLES
from pipeline.providers import PROVIDER_NAMES, PROVIDERS, credential_from_env, get_provider, resolve_base_urls
from pipeline.providers.base import JobHandle, JobRequest


def test_defaults_are_the_real_hosts():
    assert resolve_base_urls("pixverse", None, env={}) == {"pixverse": "https://app-api.pixverse.ai"}
    assert resolve_base_urls("fal", None, env={}) == {
        "fal_queue": "https://queue.fal.run",
        "fal_storage": "https://rest.fal.ai",
    }


@pytest.mark.parametrize("name", PROVIDER_NAMES)
def test_each_provider_declares_itself_in_one_place(name):
    cls = PROVIDERS[name]
    assert cls.name == name and set(cls.base_url_defaults) == set(cls.base_url_env)
    assert cls.limits_key in LIMIT_TABLES and cls.voice_id_scheme in ("id", "name")
    assert cls.default_concurrency >= 1 and cls.default_poll.timeout > 0
    assert credential_from_env(name, {cls.secret_env: " k "}) == "k" and credential_from_env(name, {}) is None


def test_redaction_watches_exactly_the_variables_the_providers_declare():
    """secrets.py sits below the providers (everything redacts), so it keeps the names; this ties them."""
    from pipeline.emulator.server import KEY_VARS
    from pipeline.secrets import SECRET_ENV_VARS

    declared = {cls.name: cls.secret_env for cls in PROVIDERS.values()}
    assert set(SECRET_ENV_VARS) == set(declared.values()) and declared == KEY_VARS
    assert set(LIMIT_TABLES) == {cls.limits_key for cls in PROVIDERS.values()}


def test_precedence_explicit_then_env_then_default():
    env = {"LIPSYNC_FAL_QUEUE_URL": "https://env-queue.example", "LIPSYNC_FAL_STORAGE_URL": "https://env-rest.example"}
    got = resolve_base_urls("fal", {"fal_queue": "https://cfg-queue.example"}, env=env)
    assert got == {"fal_queue": "https://cfg-queue.example", "fal_storage": "https://env-rest.example"}
    assert resolve_base_urls("useapi", {"pixverse": "https://other"}, env={})["useapi"] == "https://api.useapi.net"


@pytest.mark.parametrize("name", PROVIDER_NAMES)
def test_every_provider_builds_without_a_key(name, monkeypatch):
    for var in ("PIXVERSE_API_KEY", "AIMLAPI_KEY", "USEAPI_TOKEN", "FAL_KEY"):
        monkeypatch.delenv(var, raising=False)
    with get_provider(name, credential=None) as p:
        assert p.name == name and p.poll_policy.timeout > 0


def test_unknown_provider_and_insecure_base_urls():
    with pytest.raises(ConfigError, match="unknown provider"):
        get_provider("sora", credential=None)
    with pytest.raises(ValidationError, match="https"):
        get_provider("aimlapi", credential=None, base_urls={"aimlapi": "http://api.example.com"})
    with pytest.raises(ValidationError):
        get_provider("useapi", credential=None, max_jobs=9)


def test_a_path_prefix_is_kept_and_the_documented_path_appended(tmp_path):
    """A base URL with a path prefix (a gateway, a proxy) keeps it; the adapter appends the documented path."""
    with serve(lambda r: Reply(200, b'{"id": "g1", "status": "queued"}', {"Content-Type": "application/json"})) as srv:
        with get_provider("aimlapi", credential="k", base_urls={"aimlapi": srv.url + "/gateway/aiml/"}) as p:
            status = p.poll(JobHandle("aimlapi", "g1"))
    assert srv.requests[0].path == "/gateway/aiml/v2/video/generations?generation_id=g1"
    assert srv.requests[0].headers["authorization"] == "Bearer k" and status.raw_status == "queued"


def test_requests_need_exactly_one_of_audio_or_text(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    with pytest.raises(ValidationError, match="exactly one"):
        JobRequest(video).checked()
    with pytest.raises(ValidationError, match="exactly one"):
        JobRequest(video, audio=video, text="hi").checked()
    with pytest.raises(ValidationError, match="no such file"):
        JobRequest(tmp_path / "missing.mp4", text="hi").checked()
    assert JobRequest(video, text="hi").checked().speaker == "Auto"
    assert JobRequest(video, text="hi", speaker="ETHAN").checked().speaker == "Ethan"
