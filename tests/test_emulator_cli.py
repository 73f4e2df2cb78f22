"""`lipsync emulator`: serves in the foreground, prints the environment for a client, stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])  # SIGTERM: how a background job is stopped
def test_emulator_command_serves_until_interrupted(stop):
    lipsync = Path(sys.executable).with_name("lipsync")
    proc = subprocess.Popen(
        [str(lipsync), "emulator", "--port", "0", "--latency", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        exports = {}
        while len(exports) < 9:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            name, _, value = line.strip().removeprefix("export ").partition("=")
            exports[name] = value
        base = exports["LIPSYNC_PIXVERSE_BASE_URL"]
        assert base.startswith("http://127.0.0.1:") and base.endswith("/pixverse")
        reply = httpx.get(
            base + "/openapi/v2/video/lip_sync/tts_list",
            timeout=10,
            headers={"API-KEY": exports["PIXVERSE_API_KEY"], "Ai-trace-id": str(uuid.uuid4())},
        )
        assert reply.json()["ErrCode"] == 0 and reply.json()["Resp"]["total"] == 15
        wrong = httpx.get(
            base + "/openapi/v2/video/lip_sync/tts_list",
            timeout=10,
            headers={"API-KEY": "not-the-printed-key", "Ai-trace-id": str(uuid.uuid4())},
        )
        assert wrong.json()["ErrCode"] == 10003  # only the printed keys are accepted
        assert {
            "LIPSYNC_AIMLAPI_BASE_URL",
            "LIPSYNC_USEAPI_BASE_URL",
            "LIPSYNC_FAL_QUEUE_URL",
            "LIPSYNC_FAL_STORAGE_URL",
            "AIMLAPI_KEY",
            "USEAPI_TOKEN",
            "FAL_KEY",
        } <= set(exports)
        proc.send_signal(stop)
        assert proc.wait(timeout=20) == 0
        err = proc.stderr.read()
        assert "Traceback" not in err and "stopping" in err
        try:
            httpx.get(base + "/openapi/v2/video/lip_sync/tts_list", timeout=2)
            raise AssertionError("the emulator still answers after Ctrl-C")
        except httpx.TransportError:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
