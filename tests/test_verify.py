from __future__ import annotations

from pathlib import Path

import ffmpeg
import numpy as np
import pytest
from media import make_audio, make_video, media_info, truncate_copy
from sync_media import provider_result, shifted_wav

from pipeline.errors import VerificationError
from pipeline.ffmpeg import compile_stream, run_ffmpeg
from pipeline.stages.mux import SegmentSound, mux, stitch
from pipeline.stages.verify import SyncReference, VerifyExpectations, expectations_for, verify

FPS = 25
FRAME = 1 / FPS


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A master voice, the provider's result (its audio 40 ms late), and a correct final aligned to it."""
    d = tmp_path_factory.mktemp("verify")
    master = make_audio(d / "master.wav", seconds=3.0, rate=48000, seed=11)
    provider = provider_result(d / "provider.mp4", master, delay_s=0.04, seconds=3.0, fps=FPS)
    aligned = shifted_wav(master, d / "aligned.wav", 0.04)
    final = make_video(
        d / "final.mp4",
        seconds=3.0,
        width=256,
        height=144,
        fps=FPS,
        audio_file=aligned,
        audio_channels=1,
        faststart=True,
    )
    return d, master, provider, final


def _checks(report) -> dict[str, bool]:
    return {c.name: c.ok for c in report.checks}


def test_a_good_final_passes_every_check_and_records_its_figures(scene):
    _, _, provider, final = scene
    report = verify(final, VerifyExpectations(references=(SyncReference(provider),), duration_s=3.0))
    assert _checks(report) == dict.fromkeys(
        ["video_stream", "audio_stream", "decode", "av_duration", "duration", "av_offset"], True
    )
    assert report.ok
    report.raise_if_failed()
    v = media_info(final)["Video"][0]
    fig = report.figures
    assert (fig.width, fig.height) == (v.width, v.height) == (256, 144)
    assert fig.fps == pytest.approx(float(v.frame_rate))
    assert fig.size_bytes == final.stat().st_size
    assert abs(fig.offset_s) < 0.002 and fig.offset_correlation > 0.8
    assert report.to_dict()["ok"] is True
    assert len(report.commands) == 3  # the full decode and the two PCM decodes of the offset check


def test_missing_audio_stream_fails(scene):
    d, _, provider, _ = scene
    mute = make_video(d / "mute.mp4", seconds=3.0, fps=FPS, audio=False)
    report = verify(mute, VerifyExpectations(references=(SyncReference(provider),)))
    assert _checks(report)["audio_stream"] is False
    with pytest.raises(VerificationError, match=r"mute.mp4.*no audio stream") as err:
        report.raise_if_failed()
    assert err.value.exit_code == 5


def test_truncated_file_without_its_index_fails(scene):
    d, _, _, _ = scene
    whole = make_video(d / "tail_index.mp4", seconds=3.0, fps=FPS)  # moov at the end, as most encoders write
    cut = truncate_copy(whole, d / "tail_index_cut.mp4", keep=0.7)
    report = verify(cut)
    assert not report.ok
    with pytest.raises(VerificationError, match=r"tail_index_cut.mp4"):
        report.raise_if_failed()


def test_truncated_file_with_its_index_first_fails(scene):
    d, _, _, final = scene
    cut = truncate_copy(final, d / "cut.mp4", keep=0.6)  # faststart: readable header, media data cut short
    report = verify(cut)
    assert not report.ok and "truncated" in report.failed()[0].detail


def test_corrupted_media_data_fails_the_decode_check(scene):
    d, _, _, _ = scene
    clean = make_video(d / "grainy.mp4", seconds=2.0, fps=FPS, grain=20, faststart=True)
    data = bytearray(clean.read_bytes())
    garbage = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    for frac in (0.3, 0.5, 0.7):
        at = int(len(data) * frac)
        data[at : at + len(garbage)] = garbage
    damaged = d / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    assert verify(clean).ok
    report = verify(damaged)
    decode = next(c for c in report.checks if c.name == "decode")
    assert not decode.ok and decode.detail
    assert "0x" not in decode.detail  # no decoder addresses: the manifest stays reproducible


def test_audio_longer_than_video_fails_the_duration_check(scene):
    d, _, _, _ = scene
    long_audio = d / "long_audio.mp4"
    v = ffmpeg.input(f"testsrc2=size=160x120:rate={FPS}", f="lavfi", t=2.0)
    a = ffmpeg.input("sine=frequency=440:sample_rate=48000", f="lavfi", t=2.5)
    run_ffmpeg(
        compile_stream(ffmpeg.output(v, a, str(long_audio), vcodec="libx264", preset="ultrafast", acodec="aac")),
        what="long audio",
    )
    report = verify(long_audio)
    check = next(c for c in report.checks if c.name == "av_duration")
    assert not check.ok and check.measured == pytest.approx(0.5, abs=0.05)


def test_wrong_total_duration_fails(scene):
    _, _, _, final = scene
    report = verify(final, VerifyExpectations(duration_s=3.0 + 2 * FRAME))
    assert _checks(report)["duration"] is False


def test_audio_three_frames_late_fails_the_offset_check(scene):
    d, master, provider, _ = scene
    late = shifted_wav(master, d / "late.wav", 0.04 + 3 * FRAME)
    final = make_video(d / "late.mp4", seconds=3.0, width=256, height=144, fps=FPS, audio_file=late)
    report = verify(final, VerifyExpectations(references=(SyncReference(provider),)))
    check = next(c for c in report.checks if c.name == "av_offset")
    assert not check.ok
    assert check.measured == pytest.approx(3 * FRAME, abs=0.002)
    assert check.allowed == pytest.approx(FRAME)


def test_audio_that_is_not_the_providers_fails_the_offset_check(scene):
    d, _, provider, _ = scene
    other = make_audio(d / "other.wav", seconds=3.0, rate=48000, seed=99)
    final = make_video(d / "other.mp4", seconds=3.0, fps=FPS, audio_file=other)
    report = verify(final, VerifyExpectations(references=(SyncReference(provider),)))
    assert _checks(report)["av_offset"] is False
    assert report.figures.offset_correlation < 0.3


def test_unreadable_file_is_a_failed_report_not_a_crash(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 4096)
    report = verify(junk)
    assert not report.ok
    with pytest.raises(VerificationError):
        report.raise_if_failed()
    assert verify(Path(tmp_path / "absent.mp4")).ok is False


def test_stitched_final_is_checked_segment_by_segment(tmp_path):
    """Two TTS-like segments: the correct stitch passes; one whose second segment is 3 frames late fails there."""
    voices = [
        make_audio(tmp_path / f"voice{i}.wav", seconds=s, rate=48000, seed=30 + i) for i, s in enumerate([2.0, 1.6])
    ]
    results = [
        provider_result(tmp_path / f"result{i}.mp4", v, delay_s=0.0, seconds=s, fps=FPS)
        for i, (v, s) in enumerate(zip(voices, [2.0, 1.6], strict=True))
    ]
    muxed = [mux(r, None, tmp_path / f"seg{i}.mp4") for i, r in enumerate(results)]

    good = stitch([m.path for m in muxed], tmp_path / "good.mp4")
    report = verify(good.path, expectations_for(good, results, [2.0, 1.6]))
    assert report.ok, report.failed()
    assert {"av_offset_0", "av_offset_1", "segment_length_0", "segment_length_1", "duration"} <= set(_checks(report))
    first, second = report.segments  # one typed record per segment, for the manifest
    assert (first.index, first.start_s, second.index) == (0, 0.0, 1)
    assert second.start_s == pytest.approx(2.0, abs=FRAME) and second.returned_s == pytest.approx(1.6, abs=FRAME)
    assert second.ok and abs(second.offset_s) < FRAME and second.correlation > 0.9

    short = verify(good.path, expectations_for(good, results, [2.0, 1.9]))  # the provider cut 0.3 s of voice
    assert not short.ok and [c.name for c in short.failed()] == ["segment_length_1"]

    late = [voices[0], shifted_wav(voices[1], tmp_path / "late1.wav", 3 * FRAME)]
    bad = stitch([m.path for m in muxed], tmp_path / "bad.mp4", segment_audio=[SegmentSound(w) for w in late])
    checks = {c.name: c for c in verify(bad.path, expectations_for(bad, results)).checks}
    assert checks["av_offset_0"].ok
    assert not checks["av_offset_1"].ok and checks["av_offset_1"].measured == pytest.approx(3 * FRAME, abs=0.002)


def test_single_result_expectations_check_the_whole_duration(scene):
    d, master, provider, _ = scene
    result = mux(provider, master, d / "muxed.mp4")
    expect = expectations_for(result, [provider])
    assert expect.duration_s == pytest.approx(3.0, abs=FRAME)
    assert verify(result.path, expect).ok


def test_missing_video_stream_fails(tmp_path):
    sound_only = make_audio(tmp_path / "sound.m4a", seconds=1.0)
    report = verify(sound_only)
    assert _checks(report)["video_stream"] is False and _checks(report)["audio_stream"] is True
    assert not report.ok
