"""The filter that keeps native libraries' notes off stderr drops exactly those notes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.native_log import is_native_note


@pytest.mark.parametrize(
    "line",
    [
        b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        b"W0000 00:00:1796044609.752030     400 inference_feedback_manager.cc:114] Feedback manager requires",
        b"I0000 00:00:1796044609.752030 400 gl_context.cc:357] GL version: 3.2",
    ],
)
def test_native_notes_are_recognised(line):
    assert is_native_note(line)


@pytest.mark.parametrize(
    "line",
    [
        b"spoken: verify: checking the final file (pixverse, 0.2 s)",
        b"WARNING: clip.mp4: interlaced, deinterlacing",
        b"INFO: something of ours",
        b"",
    ],
)
def test_our_own_lines_pass(line):
    assert not is_native_note(line)


def test_a_process_keeps_its_lines_in_order_and_loses_none_at_exit():
    code = (
        "import os, sys\n"
        "from pipeline.native_log import filter_native_stderr\n"
        "filter_native_stderr()\n"
        "for i in range(2000):\n"
        "    print(f'line {i}', file=sys.stderr)\n"
        "    if i % 100 == 0: os.write(2, b'W0000 00:00:1.5 7 x.cc:1] native note\\n')\n"
        "sys.stderr.write('no newline at the end')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0
    lines = done.stderr.decode().split("\n")
    assert lines == [f"line {i}" for i in range(2000)] + ["no newline at the end"]
