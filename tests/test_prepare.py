"""prepare() end to end on real generated media: sync modes, TTS segments, bad input and cleanup."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from audio_timing_media import (
    channel_loudness,
    make_flv,
    make_late_sound_mp4,
    plain_decode,
    voice_offset,
    write_stereo,
)
from loudness import r128_of
from media import decode_stats, make_audio, make_video, media_info, truncate_copy
from sync_media import read_wav

import pipeline.prepare as prepare_module
from pipeline.errors import InputError, ToolError, ValidationError
from pipeline.limits import load_limits
from pipeline.prepare import PrepareRequest, prepare
from pipeline.speech import estimate_speech_seconds, write_wav
from pipeline.stages import conform_audio, conform_video
from pipeline.stages.probe import check_limits, probe

FPS = 25
FRAME = 1 / FPS
STRICT = load_limits()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prepare media")
    return {
        "video": make_video(root / "presenter clip.mp4", seconds=3, fps=FPS),
        "short_voice": make_audio(root / "voix courte é.wav", seconds=2, level_db=-30),
        "long_voice": make_audio(root / "long voice.wav", seconds=5, channels=2, level_db=-30),
    }


def media_files(out: Path) -> list[Path]:
    return (
        [p for p in out.iterdir() if p.suffix in (".mp4", ".wav", ".mp3") or ".part" in p.name] if out.exists() else []
    )


def assert_pair_fits(seg, limits=STRICT) -> tuple[float, float]:
    video, audio = decode_stats(seg.video), decode_stats(seg.audio)
    assert abs(video.video_seconds - audio.audio_seconds) <= FRAME + 1e-3, (video, audio)
    assert not check_limits(probe(seg.video), limits, "video")
    assert not check_limits(probe(seg.audio), limits, "audio")
    return video.video_seconds, audio.audio_seconds


@pytest.mark.parametrize(
    "voice, mode, seconds, extended",
    [
        ("long_voice", "bounce", 5.0, True),
        ("long_voice", "loop", 5.0, True),
        ("long_voice", "cut", 3.0, False),
        ("long_voice", "pad", 3.0, False),
        ("short_voice", "pad", 3.0, False),
        ("short_voice", "cut", 2.0, False),
        ("short_voice", "bounce", 2.0, False),
    ],
)
def test_every_sync_mode_gives_a_pair_of_equal_length(media, tmp_path, voice, mode, seconds, extended):
    result = prepare(PrepareRequest(video=media["video"], audio=media[voice], sync_mode=mode), tmp_path / "out")
    (seg,) = result.segments
    video_s, _audio_s = assert_pair_fits(seg)
    assert video_s == pytest.approx(seconds, abs=FRAME)
    assert (result.sync.video_extend is not None) == extended
    assert (seg.index, seg.text, seg.start) == (0, None, 0.0)
    assert seg.end == pytest.approx(min(3.0, seconds))
    assert r128_of(seg.audio).integrated == pytest.approx(-16.0, abs=1.0)
    assert sorted(p.name for p in media_files(tmp_path / "out")) == ["seg000.mp4", "seg000.wav"]
    report = json.loads(json.dumps(result.to_dict()))  # plain JSON, for the manifest
    assert report["audios"][0]["loudness"]["input_i"] == pytest.approx(result.audios[0].loudness.input_i)
    assert len(result.runs) >= 5  # early check, video encode, loudness measurement, normalization, output check


@pytest.mark.parametrize("mode", ["bounce", "cut", "pad"])
def test_odd_lengths_at_2997_fps_still_match(tmp_path, mode):
    video = make_video(tmp_path / "ntsc.mp4", seconds=2.2, fps=30000 / 1001)
    voice = make_audio(tmp_path / "odd.wav", seconds=1.93, rate=22050, level_db=-25)
    (seg,) = prepare(PrepareRequest(video=video, audio=voice, sync_mode=mode), tmp_path / "out").segments
    video_s, _ = assert_pair_fits(seg)
    assert video_s == pytest.approx(2.2 if mode == "pad" else 1.93, abs=1001 / 30000)


def test_padding_is_silence_after_the_voice(media, tmp_path):
    result = prepare(PrepareRequest(video=media["video"], audio=media["short_voice"], sync_mode="pad"), tmp_path)
    assert result.sync.audio_pad_seconds == pytest.approx(1.0)
    assert r128_of(result.segments[0].audio, start=2.1).integrated <= -69


def test_without_a_voice_track_the_videos_own_sound_is_used_with_start_and_end(tmp_path):
    voice = make_audio(tmp_path / "v.wav", seconds=4, level_db=-35)
    video = make_video(tmp_path / "talk.mov", seconds=4, fps=FPS, audio_file=voice)
    result = prepare(PrepareRequest(video=video, start=0.5, end=3.0), tmp_path / "out")
    (seg,) = result.segments
    assert (seg.start, seg.end) == (0.5, 3.0)
    _video_s, audio_s = assert_pair_fits(seg)
    assert audio_s == pytest.approx(2.5, abs=FRAME)
    assert not media_info(seg.video).get("Audio")  # the sound travels as the separate voice track


def test_names_ffmpeg_could_misread_are_plain_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_video(Path("scene:2 ü.mp4"), seconds=1, fps=FPS)
    make_audio(Path("-take 1: final.wav"), seconds=1)
    result = prepare(PrepareRequest(video=Path("scene:2 ü.mp4"), audio=Path("-take 1: final.wav")), Path("out:1"))
    assert_pair_fits(result.segments[0])


def test_a_rotated_portrait_phone_clip_is_conformed(tmp_path):
    phone = make_video(tmp_path / "IMG_0001 ☎.mov", seconds=2, width=320, height=180, fps=30, rotate=90)
    voice = make_audio(tmp_path / "voice.wav", seconds=2)
    (seg,) = prepare(PrepareRequest(video=phone, audio=voice), tmp_path / "out").segments
    (track,) = media_info(seg.video)["Video"]
    shown = (int(track.width), int(track.height))
    if int(float(track.rotation or 0)) in (90, 270):
        shown = shown[::-1]
    assert shown[0] < shown[1], "portrait stays portrait"


def test_a_provider_with_looser_limits_is_honoured(media, tmp_path):
    limits = load_limits(overrides={"audio_containers": ["mp3"]})
    result = prepare(PrepareRequest(video=media["video"], audio=media["short_voice"], limits=limits), tmp_path)
    assert result.segments[0].audio.name == "seg000.mp3"
    assert media_info(result.segments[0].audio)["Audio"][0].format == "MPEG Audio"


def test_trimmed_over_the_limit_the_pair_is_cut_with_a_warning(media, tmp_path):
    limits = load_limits(overrides={"video_max_seconds": 2.0, "audio_max_seconds": 2.0})
    request = PrepareRequest(video=media["video"], audio=media["long_voice"], limits=limits, long_media="trim")
    result = prepare(request, tmp_path)
    video_s, _ = assert_pair_fits(result.segments[0], limits)
    assert video_s == pytest.approx(2.0, abs=FRAME)
    assert any("cut at 2 s" in w for w in result.warnings)


# ---- TTS ----------------------------------------------------------------------------------------

SCRIPT = (
    "Welcome to the quarterly update. Revenue grew in every region, and costs stayed flat. "
    "Our new product line launched in March; early feedback has been very positive. "
    "Next quarter we will focus on retention, onboarding, and the partner programme. "
    "Thank you all for your hard work, and see you at the next meeting."
)


def test_a_long_script_gives_consecutive_proportional_segments(media, tmp_path):
    limits = load_limits(overrides={"tts_max_chars": 100})
    seen: list[tuple[str, float]] = []
    result = prepare(
        PrepareRequest(video=media["video"], text=SCRIPT, speaker="emily", sync_mode="cut", limits=limits),
        tmp_path,
        progress=lambda what, f: seen.append((what, f)),
    )
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert seen[-1][0] == f"seg{len(result.segments) - 1:03d} video"
    segs = result.segments
    assert len(segs) >= 3
    assert " ".join(s.text for s in segs) == " ".join(SCRIPT.split())
    assert all(len(s.text) <= 100 and s.speaker == "Emily" and s.audio is None for s in segs)
    assert segs[0].start == 0.0 and segs[-1].end == pytest.approx(3.0)
    speech = [estimate_speech_seconds(s.text) for s in segs]
    for a, b in itertools.pairwise(segs):
        assert a.end == pytest.approx(b.start)
    for seg, est in zip(segs, speech, strict=True):
        assert seg.end - seg.start == pytest.approx(3.0 * est / sum(speech))
        assert decode_stats(seg.video).video_seconds == pytest.approx(seg.end - seg.start, abs=FRAME)
        assert seg.video.name == f"seg{seg.index:03d}.mp4"


def test_bounce_extends_each_part_to_its_speech(media, tmp_path):
    result = prepare(PrepareRequest(video=media["video"], text=SCRIPT[:150]), tmp_path)
    (seg,) = result.segments
    assert seg.speaker == "Auto"
    assert decode_stats(seg.video).video_seconds == pytest.approx(estimate_speech_seconds(seg.text), abs=FRAME)


def test_a_chinese_script_is_chunked_by_speaking_time(media, tmp_path):
    text = "大家好，欢迎收看本期节目。今天我们来聊一聊人工智能的发展。" * 6
    result = prepare(PrepareRequest(video=media["video"], text=text, speaker="Ava", sync_mode="cut"), tmp_path)
    assert len(result.segments) >= 2
    assert "".join(s.text for s in result.segments) == text
    assert all(estimate_speech_seconds(s.text) <= 30 for s in result.segments)


def test_a_rerun_into_the_same_folder_leaves_only_its_own_segments(media, tmp_path):
    limits = load_limits(overrides={"tts_max_chars": 100})
    first = prepare(PrepareRequest(video=media["video"], text=SCRIPT, sync_mode="cut", limits=limits), tmp_path)
    assert len(first.segments) >= 3
    (tmp_path / "notes.txt").write_text("mine")
    second = prepare(PrepareRequest(video=media["video"], audio=media["short_voice"]), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "seg000.mp4", "seg000.wav"]
    assert second.segments[0].audio.is_file()


# ---- bad input ----------------------------------------------------------------------------------


def bad_inputs(root: Path, media) -> dict[str, tuple[Path, str]]:
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("this is not a video\n" * 50)
    big = make_video(root / "whole.mp4", seconds=2)
    return {
        "empty": (root / "empty.mp4", "empty"),
        "text": (root / "notes.mp4", "notes.mp4"),
        "truncated": (truncate_copy(big, root / "cut short.mp4", keep=0.4), "truncated"),
        "audio only": (media["short_voice"], "audio-only"),
        "missing": (root / "nowhere ü.mp4", "no such file"),
    }


@pytest.mark.parametrize("case", ["empty", "text", "truncated", "audio only", "missing"])
def test_a_bad_video_is_a_one_line_validation_error_and_leaves_nothing(media, tmp_path, case):
    path, words = bad_inputs(tmp_path, media)[case]
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        prepare(PrepareRequest(video=path, audio=media["short_voice"]), out)
    assert err.value.exit_code == 6 and "\n" not in str(err.value)
    assert str(path) in str(err.value) and words in str(err.value)
    assert media_files(out) == []


def test_silent_audio_is_refused_and_leaves_nothing(media, tmp_path):
    silent = make_audio(tmp_path / "silence.wav", seconds=2, speech=False, level_db=-200)
    with pytest.raises(InputError, match=r"silence.wav: the audio is silent"):
        prepare(PrepareRequest(video=media["video"], audio=silent), tmp_path / "out")
    assert media_files(tmp_path / "out") == []


@pytest.mark.parametrize(
    "request_args, message",
    [
        ({"text": "  \n "}, "empty"),
        ({"text": "Hello.", "speaker": "Olivr"}, "did you mean Oliver"),
        ({"speaker": "Emily"}, "--speaker only applies"),
        ({"text": "Hi", "audio": Path("x.wav")}, "not both"),
        ({"start": 2.0, "end": 1.0}, "must be after"),
    ],
)
def test_bad_requests_are_refused_before_any_work(media, tmp_path, request_args, message):
    with pytest.raises(ValidationError, match=message) as err:
        prepare(PrepareRequest(video=media["video"], **request_args), tmp_path / "out")
    assert err.value.exit_code == 6
    assert media_files(tmp_path / "out") == []


def test_a_failure_after_files_were_written_removes_them(media, tmp_path, monkeypatch):
    real = prepare_module.execute_video
    calls = []

    def fail_on_second(plan, dst, progress=None):
        calls.append(dst)
        if len(calls) == 2:
            raise ToolError("ffmpeg failed while encoding (simulated)")
        return real(plan, dst, progress)

    monkeypatch.setattr(prepare_module, "execute_video", fail_on_second)
    limits = load_limits(overrides={"tts_max_chars": 100})
    with pytest.raises(ToolError):
        prepare(PrepareRequest(video=media["video"], text=SCRIPT, sync_mode="cut", limits=limits), tmp_path / "out")
    assert calls[0].name == "seg000.mp4"
    assert media_files(tmp_path / "out") == []


# ---- the committed samples ----------------------------------------------------------------------

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def test_the_samples_are_small_and_what_the_demo_needs():
    from pipeline.prepare import read_text_file
    from pipeline.stages.text import chunk_text

    assert sum(p.stat().st_size for p in SAMPLES.iterdir()) <= 3_000_000
    presenter, phone = probe(SAMPLES / "presenter_720p.mp4"), probe(SAMPLES / "phone_portrait.mov")
    assert not check_limits(presenter, STRICT, "video") and presenter.audio is not None
    assert phone.video.rotation == 90 and check_limits(phone, STRICT, "video")  # needs conforming
    assert r128_of(SAMPLES / "voice.wav").integrated > -35
    assert len(chunk_text(read_text_file(SAMPLES / "script_en.txt"), STRICT.tts_max_chars, 30.0)) >= 2
    assert len(chunk_text(read_text_file(SAMPLES / "script_zh.txt"), STRICT.tts_max_chars, 30.0)) == 1


def test_an_input_named_like_a_segment_inside_the_output_folder_is_left_alone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    video = make_video(out / "seg000.mp4", seconds=1, width=64, height=48)
    before = video.read_bytes()
    with pytest.raises(InputError, match=r"seg000.mp4: is inside the output folder") as err:
        prepare(PrepareRequest(video=video), out)
    assert err.value.exit_code == 6 and video.read_bytes() == before


# ---- where the voice sits against the picture ---------------------------------------------------

LATE_S = 0.48
SAMPLE_ALIGNED_S = 0.001


@pytest.fixture(scope="module")
def late_sound(tmp_path_factory) -> tuple[Path, Path]:
    """(the voice, an mp4 whose sound is that voice starting LATE_S after the first frame)."""
    root = tmp_path_factory.mktemp("late sound")
    voice = make_audio(root / "voice.wav", seconds=2.4, level_db=-26)
    return voice, make_late_sound_mp4(root / "late sound.mp4", voice, LATE_S)


@pytest.mark.parametrize("start, end", [(None, None), (0.2, 2.6), (1.0, None)])
def test_a_sound_that_starts_after_the_picture_stays_where_it_is(late_sound, tmp_path, start, end):
    voice, video = late_sound
    result = prepare(PrepareRequest(video=video, start=start, end=end), tmp_path)
    (seg,) = result.segments
    seconds, correlation = voice_offset(voice, seg.audio)
    assert correlation > 0.9
    assert seconds == pytest.approx(LATE_S - (start or 0), abs=SAMPLE_ALIGNED_S)
    assert_pair_fits(seg)


def test_a_voice_track_whose_sound_starts_late_keeps_its_silence_first(media, late_sound, tmp_path):
    voice, late = late_sound
    result = prepare(PrepareRequest(video=media["video"], audio=late, sync_mode="cut"), tmp_path)
    seconds, correlation = voice_offset(voice, result.segments[0].audio)
    assert correlation > 0.9
    assert seconds == pytest.approx(LATE_S, abs=SAMPLE_ALIGNED_S)
    assert any("starts about 0.4" in reason for reason in result.audios[0].plan.reasons)


@pytest.fixture(scope="module")
def short_flv(tmp_path_factory) -> tuple[Path, Path]:
    """(the voice, a 1.4 s FLV carrying it at about -24 LUFS): ffmpeg cannot seek in it (no index)."""
    root = tmp_path_factory.mktemp("flv")
    voice = make_audio(root / "voice.wav", seconds=1.4, level_db=-24)
    return voice, make_flv(root / "talk.flv", voice, 1.4)


def test_an_flv_given_as_the_voice_track_is_heard_where_it_speaks(media, short_flv, tmp_path):
    _, flv = short_flv
    assert r128_of(flv).integrated == pytest.approx(-24, abs=1.5)  # as loud as the report's
    result = prepare(PrepareRequest(video=media["video"], audio=flv, sync_mode="pad"), tmp_path)
    (seg,) = result.segments
    assert r128_of(seg.audio).integrated == pytest.approx(-16, abs=1)
    seconds, correlation = voice_offset(plain_decode(flv), seg.audio)
    assert correlation > 0.9
    assert seconds == pytest.approx(0, abs=SAMPLE_ALIGNED_S)


def test_an_flv_with_its_own_sound_is_prepared(short_flv, tmp_path):
    voice, flv = short_flv
    (seg,) = prepare(PrepareRequest(video=flv), tmp_path).segments
    assert_pair_fits(seg)
    assert voice_offset(voice, seg.audio)[0] == pytest.approx(0, abs=SAMPLE_ALIGNED_S)


# ---- an unusable voice is refused before the video encode; the voice is measured once ----------------------


def _knock_over_room_tone(path: Path) -> Path:
    """Room tone with one door knock: the knock alone passes the EBU R128 gate (about -22 LUFS), no words."""
    rng = np.random.default_rng(2)
    samples = rng.normal(0, 10 ** (-60 / 20), 48000 * 3)
    samples[48000:48200] += 0.8 * np.sin(np.arange(200) / 3)
    write_wav(path, samples, 48000)
    return path


@pytest.fixture
def ffmpeg_calls(monkeypatch) -> list[list[str]]:
    """Every ffmpeg argv the conform stages run, in order."""
    calls: list[list[str]] = []
    for module in (conform_audio, conform_video):
        real = module.run_ffmpeg

        def recording(argv, *args, _real=real, **kwargs):
            calls.append(list(argv))
            return _real(argv, *args, **kwargs)

        monkeypatch.setattr(module, "run_ffmpeg", recording)
    return calls


@pytest.mark.parametrize("own_sound", [False, True], ids=["--audio", "the video's own sound"])
def test_an_unusable_voice_is_refused_before_any_video_is_encoded(tmp_path, ffmpeg_calls, own_sound):
    knock = _knock_over_room_tone(tmp_path / "knock.wav")
    video = make_video(tmp_path / "long take.mp4", seconds=3, fps=FPS, audio_file=knock if own_sound else None)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="near-silent") as err:
        prepare(PrepareRequest(video=video, audio=None if own_sound else knock), out)
    assert err.value.exit_code == 6 and "\n" not in str(err.value)
    assert ffmpeg_calls, "the voice was measured"
    assert not [argv for argv in ffmpeg_calls if "libx264" in argv or any(".mp4" in a for a in argv[-3:])]
    assert media_files(out) == []


def test_the_voice_is_measured_once(media, tmp_path, ffmpeg_calls):
    result = prepare(PrepareRequest(video=media["video"], audio=media["long_voice"], sync_mode="cut"), tmp_path)
    source_reads = [argv for argv in ffmpeg_calls if str(media["long_voice"]) in argv and "ebur128" in " ".join(argv)]
    assert len(source_reads) == 1
    assert result.checks[-1].argv == source_reads[0]
    assert sum("ebur128" in " ".join(run.argv) and str(media["long_voice"]) in run.argv for run in result.runs) == 1


def test_a_video_whose_own_sound_has_a_dead_channel_delivers_it_on_both(tmp_path):
    voice = make_audio(tmp_path / "lav.wav", seconds=3, level_db=-22)
    left = read_wav(voice)[0]
    field = write_stereo(tmp_path / "field.wav", left, np.zeros_like(left))
    video = make_video(tmp_path / "interview.mov", seconds=3, fps=FPS, audio_file=field)
    result = prepare(PrepareRequest(video=video), tmp_path / "out")
    (seg,) = result.segments
    plan = result.to_dict()["audios"][0]["plan"]
    assert plan["channel_pick"] == 0 and any("right channel is dead" in r for r in plan["reasons"])
    for channel in (0, 1):
        assert channel_loudness(seg.audio, channel) == pytest.approx(-16.0, abs=1.0)
