"""Keys come only from the environment and never show up in what we print, log or store."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from provider_kit import create_job, tiny_media

from pipeline.emulator import Emulator, EmulatorSettings
from pipeline.errors import AuthError, UncertainCreate
from pipeline.providers import JobRequest, PollPolicy, RetryPolicy, credential_from_env, get_provider
from pipeline.secrets import RedactingFilter

LIPSYNC = str(Path(sys.executable).with_name("lipsync"))
KEYS = {
    "PIXVERSE_API_KEY": "pxv-DISTINCTIVE-7f3a9c1e55",
    "AIMLAPI_KEY": "aiml-DISTINCTIVE-0b8d2e4f66",
    "USEAPI_TOKEN": "use-DISTINCTIVE-c4e6a8b277",
    "FAL_KEY": "fal-DISTINCTIVE-1a2b3c4d88:e9f0",
}
PROVIDER_VAR = {"pixverse": "PIXVERSE_API_KEY", "aimlapi": "AIMLAPI_KEY", "useapi": "USEAPI_TOKEN", "fal": "FAL_KEY"}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return tiny_media(tmp_path_factory.mktemp("secret-media"))


def test_provider_needs_no_key_until_it_sends_and_then_names_the_variable(monkeypatch, media, tmp_path):
    monkeypatch.delenv("PIXVERSE_API_KEY", raising=False)
    provider = get_provider(
        "pixverse", credential=credential_from_env("pixverse"), base_urls={"pixverse": "http://127.0.0.1:9"}
    )
    with pytest.raises(AuthError, match="PIXVERSE_API_KEY") as info:
        create_job(provider, JobRequest(*media))
    assert info.value.exit_code == 3


def _run_all(env, commands: list[list[str]]) -> list[tuple[int, str]]:
    """Run the CLI commands at once (verbose); their exit codes and everything each printed."""
    procs = [
        subprocess.Popen([LIPSYNC, "-v", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for args in commands
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    return [(p.returncode, out) for p, out in zip(procs, outputs, strict=True)]


# (provider, fault) pairs: one wave has each provider once, so faults never mix.
WAVES = [
    [("pixverse", None), ("aimlapi", "drop_after_create"), ("useapi", "moderate"), ("fal", "stuck")],
    [
        ("pixverse", "out_of_credits"),
        ("aimlapi", "fail_generation"),
        ("useapi", "server_errors"),
        ("fal", "flap_status"),
    ],
]
COUNTERS = ("drop_after_create", "server_errors", "rate_limit_creates")


def test_keys_never_appear_in_output_through_failures(media, tmp_path):
    """Run the CLI with distinctive keys through success and every kind of failure, verbose, and look for
    the keys (and pieces of them) in everything it printed."""
    video, audio = media
    results: list[tuple[int, str]] = []
    with Emulator(EmulatorSettings(latency_s=0.2, output_short_side=96)) as emu:
        env = {**os.environ, **emu.env(), **KEYS}
        for w, wave in enumerate(WAVES):
            for name, fault in wave:
                emu.faults(name).clear()
                if fault:
                    setattr(emu.faults(name), fault, 1 if fault in COUNTERS else True)
            results += _run_all(
                env,
                [
                    [
                        "submit",
                        "--provider",
                        name,
                        "--video",
                        str(video),
                        "--audio",
                        str(audio),
                        "--out",
                        str(tmp_path / f"o{w}{i}.mp4"),
                        "--timeout",
                        "1.5",
                        "--poll-interval",
                        "0.05",
                        *(["--json"] if (w + i) % 2 else []),
                    ]
                    for i, (name, _) in enumerate(wave)
                ],
            )
        results += _run_all(env, [["speakers", "--provider", name, "--json"] for name in ("pixverse", "useapi")])
    with Emulator(EmulatorSettings(api_keys=dict.fromkeys(PROVIDER_VAR, "the-right-key"))) as strict:
        env = {**os.environ, **strict.env(), **KEYS}
        refused = _run_all(
            env,
            [
                [
                    "submit",
                    "--provider",
                    name,
                    "--video",
                    str(video),
                    "--audio",
                    str(audio),
                    "--out",
                    str(tmp_path / f"x-{name}.mp4"),
                    "--json",
                ]
                for name in PROVIDER_VAR
            ],
        )
    assert [code for code, _ in refused] == [3, 3, 3, 3], refused
    assert {0, 1, 2, 4, 5} <= {code for code, _ in results}
    everything = "\n".join(text for _, text in results + refused)
    for key in KEYS.values():
        for fragment in (key, key[:12], key[-10:]):
            assert fragment not in everything, f"a key fragment leaked: {fragment}"


def test_uncertain_create_record_holds_no_key_or_media(media, monkeypatch):
    video, audio = media
    with Emulator(EmulatorSettings(latency_s=0.2)) as emu:
        for var, value in {**emu.env(), **KEYS}.items():
            monkeypatch.setenv(var, value)
        emu.faults("aimlapi").drop_after_create = 1
        provider = get_provider(
            "aimlapi",
            credential=credential_from_env("aimlapi"),
            base_urls=emu.base_urls,
            poll=PollPolicy(initial=0.05),
            create_retry=RetryPolicy(attempts=2, initial=0.01),
        )
        with pytest.raises(UncertainCreate) as info:
            create_job(provider, JobRequest(video, audio))
    stored = json.dumps(info.value.reconcile) + str(info.value) + json.dumps(info.value.to_dict())
    assert KEYS["AIMLAPI_KEY"] not in stored and "base64," not in stored


def test_log_filter_redacts_keys(monkeypatch):
    monkeypatch.setenv("USEAPI_TOKEN", KEYS["USEAPI_TOKEN"])
    record = logging.LogRecord("lipsync.x", logging.INFO, __file__, 1, "sent %s", (KEYS["USEAPI_TOKEN"],), None)
    RedactingFilter().filter(record)
    assert KEYS["USEAPI_TOKEN"] not in record.getMessage()
