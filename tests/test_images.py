"""load_image: every odd photo becomes upright 8-bit RGB, every bad file an ImageError."""

from __future__ import annotations

import contextlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashionlens.data import images
from fashionlens.data.images import load_image, resize_short_side
from fashionlens.errors import FashionLensError, ImageError

from .helpers import solid_photo, write_corrupt_jpeg


def _snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def _assert_rgb(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert img.mode == "RGB"
    assert img.size == size
    arr = np.asarray(img)
    assert arr.dtype == np.uint8 and arr.shape == (size[1], size[0], 3)
    return arr


def _assert_refused(path: Path, fragment: str) -> ImageError:
    before = _snapshot(path) if path.is_file() else None
    with pytest.raises(ImageError) as info:
        load_image(path)
    err = info.value
    assert isinstance(err, FashionLensError)
    assert str(path) in str(err), "the message must name the file"
    assert err.path == str(path)
    assert fragment in err.reason.lower()
    if before is not None:
        assert _snapshot(path) == before, "a refused file must not be modified"
    return err


# --- files that cannot be read -------------------------------------------------------

def test_truncated_jpeg(tmp_path):
    path = write_corrupt_jpeg(tmp_path / "cut.jpg")
    _assert_refused(path, "truncated")


def test_garbage_after_jpeg_header(tmp_path):
    path = tmp_path / "garbage.jpg"
    good = io.BytesIO()
    solid_photo((10, 20, 30), (32, 32)).save(good, "JPEG")
    data = good.getvalue()
    path.write_bytes(data[:20] + b"\x00" * 50 + b"not really a jpeg" * 20)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is a shopping list, not a photo\n")
    _assert_refused(path, "not an image")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _assert_refused(path, "empty")


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "gone.jpg"
    _assert_refused(path, "not found")


def test_folder_is_not_an_image(tmp_path):
    path = tmp_path / "folder.jpg"
    path.mkdir()
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(path) in str(info.value)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny 1-bit PNG whose header claims width x height pixels."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    # Only a few rows of data: refusing must happen before decoding anyway.
    idat = zlib.compress(row * 4)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def test_decompression_bomb_header_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(12000, 12000))  # 144 MP, above the 120 MP limit
    assert struct.unpack(">II", path.read_bytes()[16:24]) == (12000, 12000)
    err = _assert_refused(path, "decompression bomb")
    assert "12000x12000" in err.reason


def test_far_too_big_header_is_refused(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_claiming(30000, 30000))  # beyond Pillow's own hard limit too
    _assert_refused(path, "decompression bomb")


def test_max_pixels_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("1", (1200, 1000)).save(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 1_000_000)
    err = _assert_refused(path, "decompression bomb")
    assert "1200x1000" in err.reason
    monkeypatch.setattr(images, "MAX_PIXELS", 2_000_000)
    assert load_image(path).size == (1200, 1000)


def test_photo_between_pillow_warning_and_our_limit_loads(tmp_path, monkeypatch):
    """MAX_PIXELS is the limit: Pillow's lower warning threshold (89 MP by default) must
    not refuse a photo below it, such as a 96 MP 12000 x 8000 phone photo. Simulated at
    small scale by lowering Pillow's threshold below the photo's size."""
    path = tmp_path / "large.png"
    Image.new("1", (1500, 1000)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # warns above 1 MP
    monkeypatch.setattr(images, "MAX_PIXELS", 1_200_000_000)
    assert load_image(path).size == (1500, 1000)


# --- odd but valid photos ---------------------------------------------------------

def test_plain_rgb_jpeg_is_untouched(tmp_path):
    path = tmp_path / "plain.jpg"
    solid_photo((200, 100, 50), (40, 30)).save(path, quality=95)
    before = _snapshot(path)
    arr = _assert_rgb(load_image(path), (40, 30))
    assert abs(arr.reshape(-1, 3).mean(0) - (200, 100, 50)).max() < 8
    assert _snapshot(path) == before


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("RGB", (30, 20), (255, 0, 0)).convert("CMYK").save(path, "JPEG", quality=95)
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    before = _snapshot(path)
    arr = _assert_rgb(load_image(path), (30, 20))
    r, g, b = arr.reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60, (r, g, b)
    assert _snapshot(path) == before


def test_grayscale(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (10, 12), 77).save(path)
    arr = _assert_rgb(load_image(path), (10, 12))
    assert (arr == 77).all()


def test_one_bit(tmp_path):
    path = tmp_path / "bw.png"
    Image.new("1", (9, 7), 1).save(path)
    arr = _assert_rgb(load_image(path), (9, 7))
    assert (arr == 255).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(tmp_path, mode):
    path = tmp_path / f"alpha_{mode}.png"
    if mode == "RGBA":
        img = Image.new("RGBA", (8, 4), (0, 0, 0, 0))  # transparent black
        img.paste((200, 10, 10, 255), (0, 0, 4, 4))  # opaque red left half
        opaque = (200, 10, 10)
    else:
        img = Image.new("LA", (8, 4), (0, 0))
        img.paste((40, 255), (0, 0, 4, 4))
        opaque = (40, 40, 40)
    img.save(path)
    arr = _assert_rgb(load_image(path), (8, 4))
    assert (arr[:, 4:] == 255).all(), "transparent pixels must become white"
    assert (arr[:, :4] == opaque).all()


def test_half_transparent_pixels_blend_with_white(tmp_path):
    path = tmp_path / "half.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 128)).save(path)
    arr = _assert_rgb(load_image(path), (4, 4))
    assert abs(int(arr[0, 0, 0]) - 127) <= 2


def test_palette_with_transparency(tmp_path):
    path = tmp_path / "palette.png"
    img = Image.new("P", (6, 6), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    img.paste(1, (0, 0, 3, 6))  # left half colour 1 (blue), right half colour 0
    img.info["transparency"] = 0
    img.save(path, transparency=0)
    with Image.open(path) as raw:
        assert raw.mode == "P" and "transparency" in raw.info
    arr = _assert_rgb(load_image(path), (6, 6))
    assert (arr[:, :3] == (0, 0, 255)).all()
    assert (arr[:, 3:] == 255).all(), "the transparent palette entry must become white"


def test_palette_without_transparency(tmp_path):
    path = tmp_path / "palette.gif"
    Image.new("RGB", (5, 5), (0, 200, 0)).convert("P").save(path)
    arr = _assert_rgb(load_image(path), (5, 5))
    assert arr[..., 1].min() > 150 and arr[..., 0].max() < 60


def test_sixteen_bit_png(tmp_path):
    path = tmp_path / "deep.png"
    ramp = np.tile(np.linspace(0, 65535, 16, dtype=np.uint16), (4, 1))
    Image.fromarray(ramp).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    arr = _assert_rgb(load_image(path), (16, 4))
    row = arr[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert (np.diff(row) >= 0).all(), "brightness order must survive the 16 -> 8 bit step"
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    path = tmp_path / "phone.jpg"
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red strip at the stored image's left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(path, "JPEG", exif=exif.tobytes(), quality=95)
    before = _snapshot(path)
    arr = _assert_rgb(load_image(path), (20, 40))  # width and height swapped
    # Rotating clockwise moves the stored left edge to the top.
    assert arr[:8, :, 0].mean() > 200 and arr[:8, :, 1].mean() < 60
    assert arr[-8:, :].mean() > 230
    assert _snapshot(path) == before, "EXIF rotation must not rewrite the file"


def test_broken_exif_does_not_lose_the_photo(tmp_path):
    path = tmp_path / "oddexif.jpg"
    exif = Image.Exif()
    exif[0x0112] = 99  # not a valid orientation
    Image.new("RGB", (12, 8), (0, 0, 255)).save(path, "JPEG", exif=exif.tobytes())
    _assert_rgb(load_image(path), (12, 8))


def test_bytes_input(tmp_path):
    buf = io.BytesIO()
    solid_photo((0, 0, 250), (21, 13)).save(buf, "PNG")
    arr = _assert_rgb(load_image(buf.getvalue()), (21, 13))
    assert arr[..., 2].mean() > 200
    _assert_rgb(load_image(bytearray(buf.getvalue())), (21, 13))


def test_bad_bytes_are_named(tmp_path):
    with pytest.raises(ImageError) as info:
        load_image(b"GIF89a nonsense", name="upload-7.gif")
    assert "upload-7.gif" in str(info.value)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"", name="upload-8.jpg")
    with pytest.raises(ImageError, match="uploaded image"):
        load_image(b"\x00\x01\x02")


def test_draft_decoding_keeps_enough_pixels(tmp_path):
    path = tmp_path / "large.jpg"
    solid_photo((90, 90, 90), (800, 600)).save(path, quality=90)
    img = load_image(path, draft_size=100)
    assert img.mode == "RGB"
    assert min(img.size) >= 100, "draft mode must never go below the requested size"
    assert img.size[0] / img.size[1] == pytest.approx(800 / 600, rel=0.02)


def test_resize_short_side_only_shrinks():
    img = Image.new("RGB", (300, 100))
    assert resize_short_side(img, 50).size == (150, 50)
    assert resize_short_side(img, 200) is img


def _open_files() -> set[str]:
    fds = Path("/proc/self/fd")
    out = set()
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # a descriptor closed meanwhile
            out.add(os.readlink(fd))
    return out


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "PNG", "JPEG"])
def test_file_is_closed_after_loading(tmp_path, fmt):
    path = tmp_path / f"frames.{fmt.lower()}"
    frames = [solid_photo((200, 0, 0), (16, 16)), solid_photo((0, 0, 200), (16, 16), seed=1)]
    if fmt in ("GIF", "TIFF"):
        frames[0].save(path, fmt, save_all=True, append_images=frames[1:])
    else:
        frames[0].save(path, fmt)
    img = load_image(path)
    assert str(path) not in _open_files()
    assert img.size == (16, 16) and img.mode == "RGB"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
def test_file_is_closed_after_a_refusal(tmp_path, monkeypatch):
    cut = write_corrupt_jpeg(tmp_path / "cut.jpg")
    with pytest.raises(ImageError) as cut_info:
        load_image(cut)
    big = tmp_path / "big.png"
    Image.new("1", (300, 300)).save(big)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError) as big_info:
        load_image(big)
    # the exceptions (and their tracebacks) are still alive, yet the files are closed
    assert cut_info.value and big_info.value
    still_open = _open_files()
    assert str(cut) not in still_open and str(big) not in still_open


# --- hardening: odd files a shop or an attacker may hand us -------------------------

def test_fifo_named_jpg_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)  # opening it for reading would wait forever for a writer
    _assert_refused(fifo, "not a regular file")


def test_folder_scans_skip_fifos(tmp_path):
    from fashionlens.inference.predictor import collect_images

    solid_photo((10, 200, 10), (16, 16)).save(tmp_path / "real.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    assert collect_images(tmp_path) == [tmp_path / "real.jpg"]


@pytest.mark.parametrize("size", [(1, 20000), (20000, 1), (33, 400)])
def test_extreme_aspect_ratio_is_refused_before_any_resize(tmp_path, size):
    path = tmp_path / "strip.png"
    Image.new("L", size, 128).save(path, optimize=True)
    assert path.stat().st_size < 2000, "a tiny file, which resizing would blow up"
    err = _assert_refused(path, "10 to 1")
    assert f"{size[0]}x{size[1]}" in err.reason


def test_panorama_below_the_aspect_limit_loads(tmp_path):
    path = tmp_path / "panorama.jpg"
    solid_photo((90, 90, 90), (600, 100)).save(path)
    _assert_rgb(load_image(path), (600, 100))


def test_heic_photo_is_read(tmp_path):
    path = tmp_path / "iphone.HEIC"
    Image.new("RGB", (64, 48), (200, 20, 20)).save(path, format="HEIF", quality=90)
    assert images.is_image_file(path)
    arr = _assert_rgb(load_image(path), (64, 48))
    assert arr[..., 0].mean() > 150 and arr[..., 2].mean() < 80
    _assert_rgb(load_image(path.read_bytes(), name="upload.heic"), (64, 48))


def test_corrupt_exif_block_reads_without_a_warning(tmp_path, recwarn):
    # An IFD entry whose data lies past the end of the EXIF block: Pillow warns
    # "Tag data larger than file" with its own file path, which users cannot act on.
    tiff = (b"MM\x00*\x00\x00\x00\x08" + struct.pack(">H", 2)
            + struct.pack(">HHII", 0x010F, 2, 400, 0x1000)
            + struct.pack(">HHII", 0x0112, 3, 1, 0x00010000) + b"\x00\x00\x00\x00")
    path = tmp_path / "badexif.jpg"
    Image.new("RGB", (12, 8), (0, 0, 255)).save(path, "JPEG", exif=b"Exif\x00\x00" + tiff)
    _assert_rgb(load_image(path), (12, 8))
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
