"""`make demo` (interim, until `lipsync run` exists): prepare the committed samples and show what came out.

Runs three prepares into out/demo/: the presenter clip with a separate voice track, the rotated phone clip
with the English script (several TTS segments), and the presenter clip with the Chinese script.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .errors import LipsyncError
from .prepare import PrepareRequest, PrepareResult, prepare, read_text_file
from .stages.probe import probe

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
OUT = Path("out") / "demo"


def demo_requests(samples: Path = SAMPLES) -> dict[str, PrepareRequest]:
    presenter, phone = samples / "presenter_720p.mp4", samples / "phone_portrait.mov"
    return {
        "voice-track": PrepareRequest(video=presenter, audio=samples / "voice.wav"),
        "english-script": PrepareRequest(video=phone, text=read_text_file(samples / "script_en.txt"),
                                         speaker="Emily", sync_mode="cut"),
        "chinese-script": PrepareRequest(video=presenter, text=read_text_file(samples / "script_zh.txt"),
                                         speaker="Auto", sync_mode="cut"),
    }


def describe(name: str, result: PrepareResult) -> list[str]:
    lines = [f"{name}: {len(result.segments)} segment(s)"]
    for seg in result.segments:
        v = probe(seg.video)
        picture = f"{v.video.display_width}x{v.video.display_height} {v.duration:.2f} s {v.size_bytes / 1e6:.2f} MB"
        if seg.audio is not None:
            a = probe(seg.audio)
            voice = f"{seg.audio.name} {a.audio.sample_rate} Hz {a.audio.channels} ch {a.duration:.2f} s"
        else:
            voice = f"TTS {seg.speaker}: {seg.text[:48]!r}{'...' if len(seg.text) > 48 else ''}"
        lines.append(f"  {seg.video}  [{seg.start:6.2f}-{seg.end:6.2f} s of source]  {picture}  {voice}")
    for loud in (a.loudness for a in result.audios):
        lines.append(f"  loudness {loud.input_i:.1f} -> {loud.output_i:.1f} LUFS "
                     f"(true peak {loud.output_tp:.1f} dBTP, {loud.normalization_type})")
    lines += [f"  warning: {w}" for w in result.warnings]
    return lines


def main() -> int:
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    for name, request in demo_requests().items():
        try:
            result = prepare(request, OUT / name)
        except LipsyncError as err:
            print(f"{name}: error: {err}", file=sys.stderr)
            return err.exit_code
        print("\n".join(describe(name, result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
