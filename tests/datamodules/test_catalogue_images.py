"""A catalogue's image files (``datamodules.catalogue.images``): missing, truncated and corrupt images are
reported the same way every run, other formats are re-encoded to JPEG."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from catalogue_files import GOOD_ROWS, by_id, kinds, make_image, write_csv
from PIL import Image

from datamodules.catalogue import (
    check_image,
    jpeg_bytes,
    read_catalogue,
)


def test_missing_image(tmp_path: Path) -> None:
    schema = write_csv(tmp_path, GOOD_ROWS)
    (tmp_path / "images" / "p2.jpg").unlink()
    record = by_id(list(read_catalogue(schema)))["p2"]
    assert record.row == 2 and kinds(record) == {"missing_image"}
    assert "p2.jpg" in record.reason and "row 2 (id 'p2')" in record.describe()


def test_truncated_jpeg(tmp_path: Path) -> None:
    schema = write_csv(tmp_path, GOOD_ROWS)
    path = tmp_path / "images" / "p3.jpg"
    big = Image.new("RGB", (64, 64))
    big.putdata([(i % 256, (i * 7) % 256, (i * 13) % 256) for i in range(64 * 64)])
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    record = by_id(list(read_catalogue(schema)))["p3"]
    assert record.row == 3 and kinds(record) == {"corrupt_image"}
    assert "p3.jpg" in record.reason and "truncated" in record.reason


@pytest.mark.parametrize("content", [b"", b"not a jpeg at all", b"\xff\xd8\xff\xe0" + b"\x00" * 40])
def test_corrupt_image(tmp_path: Path, content: bytes) -> None:
    schema = write_csv(tmp_path, GOOD_ROWS)
    (tmp_path / "images" / "p1.jpg").write_bytes(content)
    record = by_id(list(read_catalogue(schema)))["p1"]
    assert kinds(record) == {"corrupt_image"} and "p1.jpg" in record.reason


def test_check_image_directly(tmp_path: Path) -> None:
    data = make_image(tmp_path / "ok.jpg")
    fmt, digest, problem = check_image(str(tmp_path / "ok.jpg"))
    assert fmt == "JPEG" and problem is None and len(digest or "") == 64
    assert jpeg_bytes(str(tmp_path / "ok.jpg")) == data  # a JPEG is stored byte for byte


def test_non_jpeg_images_are_re_encoded_to_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    make_image(path, fmt="PNG")
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.save(tmp_path / "clear.png")
    for p in (path, tmp_path / "clear.png"):
        data = jpeg_bytes(str(p))
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
    with Image.open(io.BytesIO(jpeg_bytes(str(tmp_path / "clear.png")))) as im:
        assert min(im.getpixel((4, 4))) > 240  # transparency becomes the white catalogue background


def test_a_corrupt_images_reason_is_the_same_in_every_run(tmp_path: Path) -> None:
    """PIL names an unidentifiable in-memory file by its address; the reason (and so the manifest) must not."""
    from datamodules.catalogue import check_image

    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8garbage")
    first, second = check_image(str(path))[2], check_image(str(path))[2]
    assert first.kind == "corrupt_image" and first.message == second.message
    assert "0x" not in first.message and "broken.jpg" in first.message
