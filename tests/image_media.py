"""Still images made at test time with Pillow (and ffmpeg where Pillow cannot write the format)."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.ffmpeg import ffmpeg_exe

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def marked_portrait(width: int = 480, height: int = 640) -> Image.Image:
    """A portrait picture: red block top-left, blue block bottom-left, grey elsewhere."""
    im = Image.new("RGB", (width, height), (128, 128, 128))
    im.paste(RED, (0, 0, width // 4, height // 4))
    im.paste(BLUE, (0, height - height // 4, width // 4, height))
    return im


def exif_rotated_jpeg(path: Path, orientation: int = 6, size: tuple[int, int] = (480, 640)) -> Path:
    """The marked portrait stored on its side with the EXIF orientation that shows it upright (a phone photo).
    Orientation 6 = "turn 90 degrees clockwise to show", so the pixels are stored turned counter-clockwise."""
    stored = marked_portrait(*size).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def transparent_png(path: Path, width: int = 400, height: int = 400) -> Path:
    """Left half opaque red, right half fully transparent."""
    im = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (0, 0, width // 2, height))
    im.save(path)
    return path


def cmyk_jpeg(path: Path, width: int = 400, height: int = 300) -> Path:
    """Pure process red (no cyan, full magenta and yellow, no black) in CMYK."""
    Image.new("CMYK", (width, height), (0, 255, 255, 0)).save(path, "JPEG", quality=95)
    return path


def grey16_png(path: Path, width: int = 512, height: int = 300) -> Path:
    """A 16-bit grey ramp from black to white, left to right."""
    ramp = np.tile(np.linspace(0, 65535, width).astype(np.uint16), (height, 1))
    Image.fromarray(ramp).save(path)
    return path


def rgb48_png(path: Path, width: int = 400, height: int = 300) -> Path:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one; ffmpeg can): left half red, right half blue."""
    frame = np.zeros((height, width, 3), dtype="<u2")
    frame[:, : width // 2, 0] = 65535
    frame[:, width // 2 :, 2] = 65535
    argv = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb48le",
        "-s",
        f"{width}x{height}",
        "-i",
        "-",
        "-frames:v",
        "1",
        "-pix_fmt",
        "rgb48be",
        str(path),
    ]
    subprocess.run(argv, input=frame.tobytes(), check=True)
    return path


def big_photo(path: Path, width: int = 6000, height: int = 4000) -> Path:
    """A camera-sized JPEG: a colour gradient with grain."""
    rng = np.random.default_rng(1)
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack(
        [np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)), np.full((height, width), 128.0)],
        axis=-1,
    )
    pixels += rng.normal(0, 12, (height, width, 1))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
    return path


def noisy_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """Incompressible pixels: the worst case for a byte cap."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def animated_gif(path: Path, frames: int = 3) -> Path:
    pictures = [Image.new("RGB", (300, 300), colour) for colour in (RED, GREEN, BLUE)[:frames]]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=100, loop=0)
    return path


def plain_image(path: Path, width: int, height: int, colour=(90, 140, 200)) -> Path:
    Image.new("RGB", (width, height), colour).save(path)
    return path


# sRGB's primaries adapted to D50, as an ICC profile stores them (columns of its RGB -> XYZ matrix)
_SRGB_RED, _SRGB_GREEN, _SRGB_BLUE = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)
_D50 = (0.9642, 1.0, 0.8249)


def _s15(values) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def _xyz_tag(values) -> bytes:
    return b"XYZ " + bytes(4) + _s15(values)


def _desc_tag(text: str) -> bytes:
    ascii_ = text.encode() + b"\0"
    return b"desc" + bytes(4) + struct.pack(">I", len(ascii_)) + ascii_ + bytes(4 + 4 + 2 + 1 + 67)


def rgb_profile(description: str, red, green, blue, gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 RGB display profile (matrix/TRC) with the given D50 primaries: written by hand, so the
    tests can tag pictures with a colour space that is not sRGB."""
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    tags = [
        (b"desc", _desc_tag(description)),
        (b"wtpt", _xyz_tag(_D50)),
        (b"rXYZ", _xyz_tag(red)),
        (b"gXYZ", _xyz_tag(green)),
        (b"bXYZ", _xyz_tag(blue)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, payload in tags:
        payload += bytes(-len(payload) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(payload))
        data += payload
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(4 + 4 + 4 + 4 + 8)
        + struct.pack(">I", 0)
        + _s15(_D50)
        + bytes(4 + 16 + 28)
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def swapped_primaries_jpeg(path: Path) -> Path:
    """Pixels (255, 0, 0) tagged with a profile whose "red" is sRGB's blue (and "blue" sRGB's red): a viewer
    that honours the profile shows blue."""
    icc = rgb_profile("Swapped primaries (test)", _SRGB_BLUE, _SRGB_GREEN, _SRGB_RED)
    Image.new("RGB", (400, 300), RED).save(path, "JPEG", quality=95, icc_profile=icc)
    return path
