"""Paths for files from outside: never outside their folder, whatever the name."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard import FileRoots, attachments, new_file_path, safe_filename
from switchboard.files import shown_as


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("invoice.pdf", "invoice.pdf"),
        ("..", "file"),
        (".", "file"),
        ("", "file"),
        (None, "file"),
        ("../../etc/passwd", "etc_passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("a\x00b.txt", "a_b.txt"),
        (".bashrc", "bashrc"),
        ("line\r\nbreak.txt", "line_break.txt"),
        ("switchboard.toml", "switchboard.toml"),
    ],
)
def test_safe_filename(name: str | None, expected: str) -> None:
    assert safe_filename(name) == expected


def test_long_names_are_cut_by_bytes_and_keep_their_extension() -> None:
    name = "Коммерческое предложение " * 20 + ".pdf"
    safe = safe_filename(name)
    assert len(safe.encode()) <= 150
    assert safe.endswith(".pdf") and safe.startswith("Коммерческое")
    safe.encode("utf-8")  # no half character left at the cut


def test_new_file_path_is_inside_its_folder_under_our_own_ids(tmp_path: Path) -> None:
    seen = set()
    for name in ["..", "../x", "/etc/passwd", "a/b/c", "switchboard.toml", "switchboard.toml"]:
        path = new_file_path(tmp_path / "files", name)
        assert path.is_relative_to((tmp_path / "files").resolve())
        assert path.parent.is_dir() and not path.exists()
        assert path.parent.parent.parent == (tmp_path / "files").resolve()  # YYYY-MM/<id>/
        seen.add(path)
    assert len(seen) == 6  # the same name twice: two files, nothing overwritten


def test_a_folder_that_is_a_symlink_elsewhere_is_followed_once(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    path = new_file_path(tmp_path / "link", "x.txt")
    assert path.is_relative_to(tmp_path / "real")


def test_file_roots_admit_only_regular_files_inside_them(tmp_path: Path) -> None:
    kept = tmp_path / "data" / "telegram-files"
    kept.mkdir(parents=True)
    (kept / "photo.jpg").write_bytes(b"jpg")
    (tmp_path / "secret").write_text("no")
    (kept / "out").symlink_to(tmp_path / "secret")
    (kept / "loop").symlink_to(kept / "loop")
    roots = FileRoots(tmp_path / "data" / "recordings")
    assert roots.check(kept / "photo.jpg") is None  # the folder is not registered yet
    roots.add(kept)
    assert roots.check(kept / "photo.jpg") == (kept / "photo.jpg").resolve()
    assert roots.check(str(kept / ".." / "telegram-files" / "photo.jpg")) is not None
    for refused in (
        tmp_path / "secret",
        kept / "out",  # a link out of the folder
        kept / ".." / ".." / "secret",
        kept / "loop",
        kept,  # a folder, not a file
        kept / "none.jpg",
        "/etc/hostname",
    ):
        assert roots.check(refused) is None, refused


def test_attachments_read_both_conventions_and_never_trust_their_names() -> None:
    meta = {
        "attachment": {"kind": "photo", "path": "/x/1.jpg", "mime_type": "image/jpeg", "size": 3},
        "attachments": [
            {"filename": "../../a.pdf", "content_type": "application/pdf", "path": "/x/a.pdf"},
            {"filename": "big.iso", "size": 10**10, "skipped": "larger than max"},
            "not a dict",
        ],
    }
    photo, pdf, big = attachments(meta)
    assert (photo.index, photo.name, photo.mime_type, photo.path) == (
        0,
        "photo",
        "image/jpeg",
        "/x/1.jpg",
    )
    assert pdf.name == "a.pdf" and pdf.mime_type == "application/pdf" and pdf.note is None
    assert big.path is None and big.note == "larger than max"
    assert attachments(None) == [] and attachments({"attachment": "x"}) == []
    assert shown_as("image/png") == "image" and shown_as("Audio/OGG") == "audio"
    assert shown_as("image/svg+xml") is None and shown_as("text/html") is None
    assert shown_as(None) is None
