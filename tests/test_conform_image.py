"""The still-image conform on images made at test time; outputs read back independently (MediaInfo for the
container and size, raw pixels through Pillow without any EXIF handling)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from image_media import (
    BLUE,
    RED,
    animated_gif,
    big_photo,
    cmyk_jpeg,
    exif_rotated_jpeg,
    grey16_png,
    marked_portrait,
    noisy_image,
    plain_image,
    rgb48_png,
    swapped_primaries_jpeg,
    transparent_png,
)
from media import media_info
from PIL import Image

from pipeline.errors import InputError, ValidationError
from pipeline.limits import load_image_limits
from pipeline.stages import conform_image as ci
from pipeline.stages.conform_image import (
    ImageOptions,
    ImageProbe,
    conform_image,
    last_frame_image,
    plan_image,
    probe_image,
)

LIMITS = load_image_limits("aimlapi")


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def near(pixel, colour, tolerance: int = 40) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, dtype=np.int16) - np.asarray(colour)) <= tolerance))


def image_track(path: Path):
    info = media_info(path)
    return info["General"][0], info["Image"][0]


def left_behind(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_a_phone_portrait_stays_portrait_with_its_top_on_top(tmp_path):
    src = exif_rotated_jpeg(tmp_path / "phone.jpg")
    assert Image.open(src).size == (640, 480)  # stored on its side
    result = conform_image(src, tmp_path / "out.jpg", LIMITS)
    general, track = image_track(result.path)
    assert general.format == "JPEG" and (int(track.width), int(track.height)) == (480, 640)
    out = pixels(result.path)
    assert near(out[20, 20], RED) and near(out[-20, 20], BLUE) and near(out[20, -20], (128, 128, 128))
    with Image.open(result.path) as im:
        assert im.getexif().get(0x0112) in (None, 1)  # no orientation left for a player to apply twice
    assert any("orientation 6" in r for r in result.plan.reasons)
    assert json.loads(json.dumps(result.to_dict()))["plan"]["probe"]["display_height"] == 640  # manifest-ready


def test_a_big_phone_portrait_is_scaled_upright(tmp_path):
    src = exif_rotated_jpeg(tmp_path / "phone.jpg", size=(3024, 4032))
    result = conform_image(src, tmp_path / "out.jpg", LIMITS)
    assert (result.width, result.height) == (1536, 2048)
    out = pixels(result.path)
    assert near(out[40, 40], RED) and near(out[-40, 40], BLUE) and near(out[40, -40], (128, 128, 128))


@pytest.mark.parametrize(
    "background, expected", [(None, (255, 255, 255)), ("#00ff00", (0, 255, 0)), ("black", (0, 0, 0))]
)
def test_transparency_is_flattened_onto_the_chosen_colour(tmp_path, background, expected):
    src = transparent_png(tmp_path / "logo.png")
    opts = ImageOptions() if background is None else ImageOptions(background=background)
    result = conform_image(src, tmp_path / "out.jpg", LIMITS, opts)
    out = pixels(result.path)
    assert near(out[200, 50], RED) and near(out[200, 350], expected, tolerance=8)
    assert image_track(result.path)[1].color_space == "YUV"  # a JPEG: no alpha channel survives


def test_a_cmyk_jpeg_becomes_srgb_keeping_its_colour(tmp_path):
    src = cmyk_jpeg(tmp_path / "print.jpg")
    assert probe_image(src).mode == "CMYK"
    result = conform_image(src, tmp_path / "out.jpg", LIMITS)
    assert image_track(result.path)[1].color_space == "YUV"
    assert near(pixels(result.path)[150, 200], RED, tolerance=60)
    assert any("CMYK" in r for r in result.plan.reasons)


def test_an_embedded_profile_is_honoured(tmp_path):
    src = swapped_primaries_jpeg(tmp_path / "tagged.jpg")  # red pixels that mean blue under their profile
    assert probe_image(src).icc_profile == "Swapped primaries (test)"
    result = conform_image(src, tmp_path / "out.jpg", LIMITS)
    assert near(pixels(result.path)[150, 200], BLUE, tolerance=30)
    with Image.open(result.path) as im:
        assert "icc_profile" not in im.info  # sRGB now, said by having no profile
    assert any("'Swapped primaries (test)': converted to sRGB" in r for r in result.plan.reasons)


def test_16_bit_grey_is_reduced_not_clipped(tmp_path):
    src = grey16_png(tmp_path / "scan.png")
    assert probe_image(src).bit_depth == 16
    result = conform_image(src, tmp_path / "out.png", LIMITS, ImageOptions(output_format="png"))
    general, track = image_track(result.path)
    assert general.format == "PNG" and int(track.bit_depth) == 8
    row = pixels(result.path)[150, :, 0]
    # the ramp is kept: a quarter of the way along is a quarter grey (Pillow's convert("L") would be 255)
    assert abs(row[128] - 64) <= 3 and abs(row[384] - 191) <= 3 and row[0] <= 2 and row[-1] >= 253


def test_16_bit_rgb_becomes_8_bit_rgb(tmp_path):
    src = rgb48_png(tmp_path / "render.png")
    p = probe_image(src)
    assert (p.bit_depth, p.mode) == (16, "RGB")
    result = conform_image(src, tmp_path / "out.png", LIMITS, ImageOptions(output_format="png"))
    assert int(image_track(result.path)[1].bit_depth) == 8
    out = pixels(result.path)
    assert near(out[150, 100], RED, 2) and near(out[150, 300], BLUE, 2)


def test_a_camera_sized_photo_is_scaled_to_the_cap(tmp_path):
    src = big_photo(tmp_path / "dslr.jpg")
    result = conform_image(src, tmp_path / "out.jpg", LIMITS)
    general, track = image_track(result.path)
    assert (int(track.width), int(track.height)) == (2048, 1365)
    assert int(general.file_size) <= LIMITS.image_max_bytes
    out = pixels(result.path)
    assert out[:, :, 0].mean(axis=0)[-50:].mean() > out[:, :, 0].mean(axis=0)[:50].mean() + 150  # gradient kept


def test_the_jpeg_quality_steps_down_to_meet_the_byte_cap(tmp_path):
    src = noisy_image(tmp_path / "noise.png", 1200, 900)
    limits = load_image_limits("aimlapi", {"image_max_bytes": 600_000})
    result = conform_image(src, tmp_path / "out.jpg", limits)
    assert result.path.stat().st_size <= 600_000
    assert result.quality is not None and result.quality < LIMITS.jpeg_quality


def test_a_byte_cap_that_cannot_be_met_leaves_nothing(tmp_path):
    src = noisy_image(tmp_path / "noise.png", 800, 600)
    limits = load_image_limits("aimlapi", {"image_max_bytes": 20_000})
    with pytest.raises(InputError, match=r"noise.png: still .* bytes at JPEG quality 70"):
        conform_image(src, tmp_path / "out.jpg", limits)
    assert left_behind(tmp_path, {"noise.png"}) == []


def test_a_small_picture_that_fits_is_still_re_encoded_without_its_exif(tmp_path):
    src = tmp_path / "face.jpg"
    exif = Image.Exif()
    exif[0x8827] = 400  # ISO: any camera tag
    Image.new("RGB", (600, 800), (10, 200, 30)).save(src, "JPEG", exif=exif.tobytes())
    result = conform_image(src, tmp_path / "out.jpg", LIMITS)
    with Image.open(result.path) as im:
        assert len(im.getexif()) == 0 and im.size == (600, 800)


@pytest.mark.parametrize(
    "suffix, fmt, probed",
    [(".webp", "WEBP", "webp"), (".tif", "TIFF", "tiff"), (".bmp", "BMP", "bmp"), (".png", "PNG", "png")],
)
def test_every_accepted_format_comes_out_as_jpeg(tmp_path, suffix, fmt, probed):
    src = tmp_path / f"face{suffix}"
    marked_portrait(300, 400).save(src, fmt)
    assert probe_image(src).format == probed
    result = conform_image(src, tmp_path / "out.jpg", LIMITS)
    general, track = image_track(result.path)
    assert general.format == "JPEG" and (int(track.width), int(track.height)) == (300, 400)
    assert near(pixels(result.path)[20, 20], RED)


def test_an_animated_webp_is_refused(tmp_path):
    src = tmp_path / "loop.webp"
    frames = [Image.new("RGB", (300, 300), c) for c in (RED, BLUE)]
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(InputError, match="animated WEBP \\(2 frames\\)"):
        conform_image(src, tmp_path / "out.jpg", LIMITS)


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "notes.jpg"
    text.write_text("Dear presenter, this is not a picture.\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    return {
        "animated gif": (animated_gif(tmp_path / "wave.gif"), "animated GIF (3 frames)"),
        "zero bytes": (empty, "empty file"),
        "text as jpg": (text, "not an image"),
        "1x1": (plain_image(tmp_path / "dot.png", 1, 1), "1x1 px is too small to animate"),
        "tiny": (plain_image(tmp_path / "thumb.jpg", 200, 150), "200x150 px is too small to animate"),
        "still gif": (animated_gif(tmp_path / "still.gif", frames=1), "GIF images are not accepted"),
        "banner": (
            plain_image(tmp_path / "banner.png", 8000, 300),
            "too narrow to animate: with its long side capped at 2048 px its short side would be 77 px",
        ),
    }


@pytest.mark.parametrize("case", ["animated gif", "zero bytes", "text as jpg", "1x1", "tiny", "still gif", "banner"])
def test_bad_inputs_are_refused_in_one_line_naming_the_file(tmp_path, case):
    src, reason = _bad_inputs(tmp_path)[case]
    before = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(InputError) as caught:
        conform_image(src, tmp_path / "out.jpg", LIMITS)
    message = str(caught.value)
    assert message.startswith(f"{src}: ") and reason in message and "\n" not in message
    assert caught.value.exit_code == 6
    assert {p.name for p in tmp_path.iterdir()} == before


def test_a_file_damaged_after_its_header_is_refused_at_decode(tmp_path):
    good = big_photo(tmp_path / "whole.jpg", 1600, 1200)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:4000])
    with pytest.raises(InputError, match=r"cut.jpg: cannot decode the image"):
        conform_image(cut, tmp_path / "out.jpg", LIMITS)
    assert not (tmp_path / "out.jpg").exists() and left_behind(tmp_path, {"whole.jpg", "cut.jpg"}) == []


def test_heic_without_a_decoder_is_refused_with_the_fix(tmp_path, monkeypatch):
    fake = tmp_path / "IMG_0001.HEIC"
    fake.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    monkeypatch.setattr(ci, "heif_available", lambda: False)
    with pytest.raises(InputError, match=r"IMG_0001.HEIC: HEIC/HEIF photo: install the heic extra .* or export"):
        probe_image(fake)


def test_heic_is_read_when_pillow_heif_is_installed(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    src = tmp_path / "phone.heic"
    heif = pillow_heif.from_pillow(Image.new("RGB", (640, 480), RED))
    heif.save(str(src), quality=90)
    p = probe_image(src)
    assert p.format == "heif" and (p.width, p.height) == (640, 480)
    result = conform_image(src, tmp_path / "out.jpg", LIMITS)
    assert image_track(result.path)[0].format == "JPEG" and near(pixels(result.path)[240, 320], RED, 30)


def test_the_output_suffix_must_match_the_planned_format(tmp_path):
    src = plain_image(tmp_path / "a.png", 400, 400)
    with pytest.raises(ValidationError, match=r"needs the suffix .jpg"):
        conform_image(src, tmp_path / "out.png", LIMITS)


def test_a_background_that_is_no_colour_is_refused():
    with pytest.raises(ValidationError, match="'transparentish' is not a colour"):
        ImageOptions(background="transparentish")


# ---- the planner (pure) --------------------------------------------------------------------------------

probes = st.builds(
    ImageProbe,
    path=st.just(Path("x.jpg")),
    format=st.sampled_from(["jpeg", "png", "webp", "tiff", "bmp"]),
    width=st.integers(1, 12000),
    height=st.integers(1, 12000),
    orientation=st.integers(1, 8),
    mode=st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16"]),
    has_alpha=st.booleans(),
    bit_depth=st.sampled_from([8, 16]),
    frames=st.just(1),
    size_bytes=st.integers(1, 10**8),
    icc_profile=st.sampled_from([None, "sRGB IEC61966-2.1", "Display P3", "unreadable"]),
)


@given(probes)
def test_the_plan_never_upscales_keeps_the_shape_and_fits(p):
    try:
        plan = plan_image(p, LIMITS)
    except InputError as err:
        long, short = max(p.width, p.height), min(p.width, p.height)
        scaled_short = short * min(1.0, LIMITS.image_max_side / long)
        assert round(scaled_short) < LIMITS.image_min_side and ("too small" in str(err) or "too narrow" in str(err))
        return
    assert min(plan.width, plan.height) >= LIMITS.image_min_side
    assert max(plan.width, plan.height) <= LIMITS.image_max_side
    assert plan.width <= p.display_width and plan.height <= p.display_height
    shape_change = (plan.width / plan.height) / (p.display_width / p.display_height)
    assert abs(shape_change - 1) <= 1 / min(plan.width, plan.height)
    assert plan.transpose == (p.orientation != 1)
    assert (plan.flatten is not None) == p.has_alpha
    assert (plan.colour == "keep") == (
        p.mode in ("RGB", "RGBA") and p.icc_profile in (None, "sRGB IEC61966-2.1", "unreadable")
    )
    assert plan.format == "jpeg" and plan.suffix == ".jpg" and plan.reasons


@given(probes, st.integers(2, 40))
def test_an_animated_image_is_refused_whatever_else(p, frames):
    with pytest.raises(InputError, match=f"animated .* \\({frames} frames\\)"):
        plan_image(replace(p, frames=frames), LIMITS)


def test_an_output_format_the_provider_does_not_take_is_a_validation_error():
    p = ImageProbe(Path("a.png"), "png", 800, 600, 1, "RGB", False, 8, 1, 1000, None)
    limits = load_image_limits("aimlapi", {"output_formats": ["jpeg"]})
    with pytest.raises(ValidationError, match="output format png"):
        plan_image(p, limits, ImageOptions(output_format="png"))


@pytest.mark.parametrize(
    "override, message",
    [
        (
            {"default_resolution": "4k"},
            "image limits: Value error, default_resolution '4k' is not among the resolutions",
        ),
        ({"default_resolution": "1080p", "default_duration": 8}, "default_duration 8 is not allowed at 1080p"),
        ({"image_min_side": 0}, "image limits.image_min_side: Input should be greater than 1"),
        ({"speech_fill": 1.5}, "image limits.speech_fill"),
    ],
)
def test_image_limits_that_contradict_themselves_are_a_config_error(override, message):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_image_limits("aimlapi", override)


def test_image_limits_exist_only_for_a_provider_with_the_model():
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="'fal' has no image-to-video model"):
        load_image_limits("fal")


def test_the_last_frame_of_a_clip_is_the_last_one_shown(tmp_path):
    from media import gray_frames, make_video

    clip = make_video(tmp_path / "clip.mp4", seconds=2.0, width=320, height=240)
    last = last_frame_image(clip, tmp_path / "last.png")
    frames = gray_frames(clip).astype(float)
    picture = np.asarray(Image.open(last).convert("L"), dtype=float)
    assert picture.shape == frames[-1].shape
    assert np.abs(picture - frames[-1]).mean() < np.abs(picture - frames[-5]).mean() / 4


def test_a_clip_without_a_picture_has_no_last_frame(tmp_path):
    from media import make_audio

    from pipeline.errors import LipsyncError

    sound = make_audio(tmp_path / "voice.wav", seconds=1.0)
    with pytest.raises(LipsyncError):
        last_frame_image(sound, tmp_path / "last.png")
    assert not (tmp_path / "last.png").exists() and left_behind(tmp_path, {"voice.wav"}) == []
