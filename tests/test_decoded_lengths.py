"""Lengths from the decoded media where the header only guesses: joined MP3s, a cut MP3, raw ADTS AAC.

Each test measures the source by decoding it fully (tests/media.decode_stats, not the probe) and checks what
prepare delivered against that, not against the header."""

from __future__ import annotations

import wave
from dataclasses import replace
from pathlib import Path

import pytest
from media import concatenated_mp3, decode_stats, make_audio, make_video, media_info, truncate_copy

from pipeline.ffmpeg import ffmpeg_exe, run_ffmpeg
from pipeline.prepare import PrepareRequest, prepare
from pipeline.stages import probe as probe_module
from pipeline.stages.probe import probe

FRAME_S = 1 / 25  # the clips' frame: the delivered voice is cut to whole frames of the video


def header_seconds(path: Path) -> float:
    """What MediaInfo reads from the header (the Xing frame count, for an MP3)."""
    return float(media_info(path)["General"][0].duration) / 1000


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def delivered_voice_seconds(voice: Path, tmp_path: Path) -> float:
    clip = make_video(tmp_path / "clip.mp4", seconds=2, width=160, height=120, audio=False)
    result = prepare(PrepareRequest(video=clip, audio=voice), tmp_path / "out")
    declared = probe(voice).audio.declared_duration
    if declared is not None:  # the plan (so the manifest) says which length was used and what the header said
        assert any(f"its header declares {declared:.3f} s" in r for r in result.audios[0].plan.reasons)
    return wav_seconds(result.segments[0].audio)


@pytest.fixture
def joined_mp3(tmp_path) -> Path:
    first = make_audio(tmp_path / "part 1.mp3", seconds=3, seed=1, **{"q:a": 4})
    second = make_audio(tmp_path / "part 2.mp3", seconds=5, seed=2, **{"q:a": 4})
    return concatenated_mp3(tmp_path / "episode.mp3", first, second)


def test_an_mp3_whose_header_understates_its_length_is_delivered_whole(tmp_path, joined_mp3):
    decoded, declared = decode_stats(joined_mp3).audio_seconds, header_seconds(joined_mp3)
    assert declared < 3.2 and decoded > 7.9  # the case: the header says 3 s, 8 s decode
    p = probe(joined_mp3)
    assert p.audio.duration == pytest.approx(decoded, abs=FRAME_S)
    assert p.audio.declared_duration == pytest.approx(declared, abs=0.1)
    assert any(
        f"declares {p.audio.declared_duration:.3f} s but {p.audio.duration:.3f} s decodes" in w for w in p.warnings
    ), p.warnings
    assert delivered_voice_seconds(joined_mp3, tmp_path) == pytest.approx(decoded, abs=1.5 * FRAME_S)


def test_an_mp3_whose_header_overstates_its_length_is_delivered_as_it_decodes(tmp_path):
    whole = make_audio(tmp_path / "whole.mp3", seconds=8, seed=3, **{"q:a": 4})
    cut = truncate_copy(whole, tmp_path / "cut.mp3", keep=0.5)
    decoded, declared = decode_stats(cut).audio_seconds, header_seconds(cut)
    assert declared > 7.9 and 3.5 < decoded < 4.5  # the Xing header still says 8 s
    p = probe(cut)
    assert p.audio.duration == pytest.approx(decoded, abs=FRAME_S) and p.duration == p.audio.duration
    assert any("but" in w and "decodes" in w for w in p.warnings)
    assert delivered_voice_seconds(cut, tmp_path) == pytest.approx(decoded, abs=1.5 * FRAME_S)


def test_raw_adts_aac_without_a_declared_length_is_measured(tmp_path):
    source = make_audio(tmp_path / "voice.wav", seconds=3)
    adts = tmp_path / "voice.aac"
    run_ffmpeg(
        [ffmpeg_exe(), "-v", "error", "-i", str(source), "-c:a", "aac", "-f", "adts", str(adts)],
        what="making voice.aac",
    )
    assert media_info(adts)["General"][0].duration is None  # the case: no length anywhere in the file
    decoded = decode_stats(adts).audio_seconds
    assert probe(adts).audio.duration == pytest.approx(decoded, abs=FRAME_S)
    assert delivered_voice_seconds(adts, tmp_path) == pytest.approx(decoded, abs=1.5 * FRAME_S)


def test_an_honest_mp3_gets_no_warning(tmp_path):
    honest = make_audio(tmp_path / "honest.mp3", seconds=3, **{"q:a": 4})
    p = probe(honest)
    assert p.warnings == () and p.audio.declared_duration is None
    assert p.audio.duration == pytest.approx(decode_stats(honest).audio_seconds, abs=FRAME_S)


def test_audio_packets_that_disagree_with_the_header_are_settled_by_decoding(tmp_path, monkeypatch):
    """Beside a picture the sound's length comes from its packets; packets spanning 0.5 s more than the header
    says (under a timestamp jump) are checked against the decoded stream, which wins."""
    clip = make_video(tmp_path / "clip.mp4", seconds=2, width=160, height=120)
    decoded = decode_stats(clip).audio_seconds
    real = probe_module.stream_packets

    def long_audio_packets(path, spec):
        timing = real(path, spec)
        return replace(timing, end=timing.end + 0.5) if spec.startswith("a:") else timing

    monkeypatch.setattr(probe_module, "stream_packets", long_audio_packets)
    p = probe(clip)
    assert p.audio.duration == pytest.approx(decoded, abs=FRAME_S)
