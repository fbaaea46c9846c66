"""``switchboard contacts import`` / ``export`` as a user runs them."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SWITCHBOARD = shutil.which("switchboard")

CSV = """name,company,phone,email,telegram,owner
Olga Petrova,Romashka,8 (495) 123-45-67;+7 916 000-00-01,olga@romashka.ru,,anna
Ivan,,+74957654321,,,
,Nameless Ltd,+74950000001,,,
Bad Phone,,12,,,
Nobody,,,,,
Wrong Owner,,+74950000002,,,zoe
"""

VCF = """BEGIN:VCARD
VERSION:3.0
FN:Maria Sidorova
ORG:Vasilek
TEL;TYPE=CELL:+7 903 111-22-33
EMAIL:maria@vasilek.ru
END:VCARD
BEGIN:VCARD
VERSION:3.0
FN;broken line without a value
END:VCARD
BEGIN:VCARD
VERSION:3.0
N:Smirnov;Petr;;;
TEL:89031112244
END:VCARD
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "sb.toml"
    path.write_text("[switchboard]\ndefault_region = 'RU'\n[[switchboard.agents]]\nname = 'anna'\n")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    assert SWITCHBOARD
    return subprocess.run(
        [SWITCHBOARD, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SWITCHBOARD_PLUGINS": ""},
    )


def test_csv_import_reports_rejects_and_is_idempotent(config: Path, tmp_path: Path) -> None:
    source = tmp_path / "contacts.csv"
    source.write_text(CSV)
    report = tmp_path / "rejected.csv"
    first = run("contacts", "import", "--config", str(config), str(source), "--report", str(report))
    assert first.returncode == 1  # some rows were rejected
    assert "2 created, 0 updated, 0 unchanged, 4 rejected" in first.stdout
    rejected = dict(csv.reader(io.StringIO(report.read_text())))
    assert rejected["line 4"] == "the name is empty"
    assert rejected["line 5"].startswith("not a valid phone address: '12'")
    assert rejected["line 6"].startswith("no phone, email or telegram id")
    assert rejected["line 7"] == "no agent named 'zoe'"
    assert "rejected line 7: no agent named 'zoe'" in first.stderr

    again = run("contacts", "import", "--config", str(config), str(source))
    assert "0 created, 0 updated, 2 unchanged, 4 rejected" in again.stdout

    source.write_text("Name,Phones\nOlga P.,+74951234567;+74951234568\n")
    changed = run("contacts", "import", "--config", str(config), str(source))
    assert changed.returncode == 0
    assert "0 created, 1 updated, 0 unchanged, 0 rejected" in changed.stdout

    exported = run("contacts", "export", "--config", str(config))
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    olga = next(r for r in rows if r["name"] == "Olga P.")
    assert olga["phone"] == "+74951234567;+79160000001;+74951234568"
    assert (olga["email"], olga["company"], olga["owner"]) == (
        "olga@romashka.ru",
        "Romashka",
        "anna",
    )
    assert len(rows) == 2


def test_vcard_import_and_export(config: Path, tmp_path: Path) -> None:
    source = tmp_path / "contacts.vcf"
    source.write_text(VCF)
    result = run("contacts", "import", "--config", str(config), str(source))
    assert "2 created, 0 updated, 0 unchanged, 1 rejected" in result.stdout
    assert "rejected card 2: not a valid vCard" in result.stderr
    out = tmp_path / "out.vcf"
    run("contacts", "export", "--config", str(config), "--format", "vcf", "-o", str(out))
    text = out.read_text()
    assert "FN:Maria Sidorova" in text and "ORG:Vasilek" in text
    assert "TEL:+79031112233" in text and "EMAIL:maria@vasilek.ru" in text
    assert "FN:Petr Smirnov" in text and "TEL:+79031112244" in text
    again = run("contacts", "import", "--config", str(config), str(out))
    assert "0 created, 0 updated, 2 unchanged, 0 rejected" in again.stdout


def test_csv_from_outsiders_is_safe_both_ways(config: Path, tmp_path: Path) -> None:
    """A name that a spreadsheet would run as a formula is exported as text (a leading
    ``'``) and imported back as it was; a cell over the csv module's 128 KiB limit is
    reported and the rows after it are still imported."""
    source = tmp_path / "contacts.csv"
    huge = "x" * 200_000
    source.write_text(
        "name,company,phone\n"
        '"=HYPERLINK(""http://evil.example"",""click"")",@SUM(A1),+74951234567\n'
        f"{huge},,+74951234568\n"
        "-2+3,,+74951234569\n"
    )
    first = run("contacts", "import", "--config", str(config), str(source))
    assert "2 created, 0 updated, 0 unchanged, 1 rejected" in first.stdout, first.stdout
    assert "field larger than field limit" in first.stderr
    exported = run("contacts", "export", "--config", str(config)).stdout
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert sorted((r["name"], r["company"], r["phone"]) for r in rows) == [
        ("'-2+3", "", "+74951234569"),
        ('\'=HYPERLINK("http://evil.example","click")', "'@SUM(A1)", "+74951234567"),
    ]
    back = tmp_path / "back.csv"
    back.write_text(exported)
    again = run("contacts", "import", "--config", str(config), str(back))
    assert "0 created, 0 updated, 2 unchanged, 0 rejected" in again.stdout, again.stdout
