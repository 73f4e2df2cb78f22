"""Regenerate the committed samples: `python samples/generate.py` (needs espeak-ng for the speech).

presenter_720p.mp4  compliant 1280x720 H.264/AAC presenter clip with its own speech (6 s)
phone_portrait.mov  a phone recording: HEVC 2560x1440 stored landscape with a 90° rotation tag (4 s);
                    over the 1920 px limit and rotated, so it needs conforming
voice.wav           a speech voice track (espeak-ng reading voice.txt)
script_en.txt       a multi-chunk English script; script_zh.txt a short Chinese one
presenter_still.jpg a drawn presenter (600x800 JPEG) for the talking-portrait job
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import ffmpeg
from PIL import Image, ImageDraw

from pipeline.ffmpeg import compile_stream, run_ffmpeg

HERE = Path(__file__).resolve().parent


def speak(text_file: Path, dst: Path, voice: str = "en-us") -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-f", str(text_file), "-w", str(dst)], check=True)
    return dst


def picture(width: int, height: int, seconds: float, fps: int):
    return ffmpeg.input(f"testsrc2=size={width}x{height}:rate={fps}", f="lavfi", t=seconds)


def run(stream, what: str) -> None:
    run_ffmpeg(compile_stream(stream.global_args("-hide_banner", "-loglevel", "error")), what=what)


def still(dst: Path, width: int = 600, height: int = 800) -> Path:
    """A presenter drawn with Pillow: a head and shoulders in front of a blue studio gradient."""
    im = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(im)
    for y in range(height):
        draw.line([(0, y), (width, y)], fill=(40, 70 + y * 60 // height, 120 + y * 80 // height))
    cx = width // 2
    draw.ellipse([cx - 230, 560, cx + 230, 1000], fill=(60, 60, 90))                 # shoulders
    draw.rectangle([cx - 45, 470, cx + 45, 590], fill=(224, 172, 140))                 # neck
    draw.ellipse([cx - 130, 190, cx + 130, 520], fill=(232, 182, 150))                 # face
    draw.chord([cx - 140, 160, cx + 140, 380], 180, 360, fill=(70, 45, 30))            # hair
    for ex in (cx - 55, cx + 55):                                                      # eyes
        draw.ellipse([ex - 22, 320, ex + 22, 346], fill=(250, 250, 250))
        draw.ellipse([ex - 9, 324, ex + 9, 342], fill=(50, 35, 25))
    draw.line([(cx, 350), (cx - 10, 410), (cx + 8, 412)], fill=(190, 130, 110), width=4)   # nose
    draw.arc([cx - 50, 420, cx + 50, 470], 20, 160, fill=(160, 60, 60), width=6)       # mouth
    im.save(dst, "JPEG", quality=85, optimize=True)
    return dst


def main() -> None:
    still(HERE / "presenter_still.jpg")
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
