"""Paths for files from outside: never outside their folder, whatever the name."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard import new_file_path, safe_filename


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
