"""Regenerate the committed samples: `python samples/generate.py` (needs espeak-ng for the speech).

presenter_720p.mp4  compliant 1280x720 H.264/AAC presenter clip with its own speech (6 s)
phone_portrait.mov  a phone recording: HEVC 2560x1440 stored landscape with a 90° rotation tag (4 s);
                    over the 1920 px limit and rotated, so it needs conforming
voice.wav           a speech voice track (espeak-ng reading voice.txt)
script_en.txt       a multi-chunk English script; script_zh.txt a short Chinese one
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import ffmpeg

from pipeline.ffmpeg import compile_stream, run_ffmpeg

HERE = Path(__file__).resolve().parent


def speak(text_file: Path, dst: Path, voice: str = "en-us") -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-f", str(text_file), "-w", str(dst)], check=True)
    return dst


def picture(width: int, height: int, seconds: float, fps: int):
    return ffmpeg.input(f"testsrc2=size={width}x{height}:rate={fps}", f="lavfi", t=seconds)


def run(stream, what: str) -> None:
    run_ffmpeg(compile_stream(stream.global_args("-hide_banner", "-loglevel", "error")), what=what)


def main() -> None:
    voice = speak(HERE / "voice.txt", HERE / "voice.wav")
    sound = ffmpeg.input(str(voice)).audio.filter("apad")
    run(ffmpeg.output(picture(1280, 720, 6, 25), sound, str(HERE / "presenter_720p.mp4"), t=6,
                      **{"c:v": "libx264", "b:v": "500k", "preset": "slow", "pix_fmt": "yuv420p",
                         "c:a": "aac", "b:a": "64k", "ar": 48000, "movflags": "+faststart"}),
        "making presenter_720p.mp4")
    with tempfile.TemporaryDirectory() as scratch:
        plain = Path(scratch) / "plain.mov"
        run(ffmpeg.output(picture(2560, 1440, 4, 30), sound, str(plain), t=4,
                          **{"c:v": "libx265", "b:v": "900k", "preset": "fast", "tag:v": "hvc1",
                             "x265-params": "log-level=error", "pix_fmt": "yuv420p",
                             "c:a": "aac", "b:a": "64k", "ar": 44100}),
            "making phone_portrait.mov")
        # ffmpeg's display_rotation is counter-clockwise; phones store 90° clockwise for portrait
        tagged = ffmpeg.input(str(plain), display_rotation=-90)
        run(ffmpeg.output(tagged, str(HERE / "phone_portrait.mov"), c="copy", map=0), "tagging the rotation")


if __name__ == "__main__":
    main()
