"""scripts/system-deps, the one list of system packages: run with a fake apt-get, id and
sudo on PATH and stub programs standing for the installed packages."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "system-deps"
BASH = "/bin/bash"
PROGRAMS = {
    "kamailio": "kamailio",
    "kamailio-tls-modules": "/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so",
    "baresip-core": "baresip",
    "dnsmasq-base": "/usr/sbin/dnsmasq",
    "iptables": "/usr/sbin/iptables",
    "socat": "socat",
    "sip-tester": "sipp",
    "sipvicious": "svwar",
    "dovecot-imapd": "dovecot",
    "espeak-ng": "espeak-ng",
    "graphviz": "dot",
    "chromium": "chromium",
    "libatomic1": "@libatomic.so.1",
}


def stub(folder: Path, name: str, body: str = "exit 0") -> None:
    path = folder / name
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(0o755)


def run(
    tmp_path: Path,
    present: list[str],
    *,
    uid: int = 0,
    sudo: bool = False,
    apt: bool = True,
    args: tuple[str, ...] = (),
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    calls.touch()
    libraries = []
    for package in present:
        if PROGRAMS[package].startswith("@"):
            libraries.append(PROGRAMS[package][1:])
        elif PROGRAMS[package].startswith("/"):
            file = tmp_path / "root" / PROGRAMS[package].lstrip("/")
            file.parent.mkdir(parents=True, exist_ok=True)
            file.touch()
        else:
            stub(bin_dir, PROGRAMS[package])
    listing = "".join(f"\t{lib} (libc6,x86-64) => /lib/{lib}\n" for lib in libraries)
    stub(bin_dir, "ldconfig", f"printf '{listing}'")
    stub(bin_dir, "id", f'[ "$1" = -u ] && echo {uid}')
    if apt:
        stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}')
    if sudo:
        stub(bin_dir, "sudo", f'[ "$1" = -n ] && shift; echo "sudo $1" >> {calls}; "$@"')
    result = subprocess.run(
        [BASH, str(SCRIPT), *args],
        # /usr/sbin and /sbin are added by the script itself: none of PROGRAMS lives there
        # in this test's world except through bin_dir, so a real one must not be found.
        env={
            "PATH": str(bin_dir),
            "HOME": str(tmp_path),
            "SYSTEM_DEPS_ROOT": str(tmp_path / "root"),
        },
        capture_output=True,
        text=True,
    )
    return result, calls.read_text().splitlines()


def sbin_free(packages: list[str]) -> list[str]:
    """The packages whose programs this machine does not have in /usr/sbin or /sbin (the
    script always looks there, so only these can be made to look missing)."""
    return [
        p
        for p in packages
        if PROGRAMS[p].startswith("/")
        or not any(os.path.exists(f"{d}/{PROGRAMS[p]}") for d in ("/usr/sbin", "/sbin"))
    ]


def test_the_list_is_the_packages() -> None:
    listed = subprocess.run([BASH, str(SCRIPT), "--list"], capture_output=True, text=True)
    assert listed.returncode == 0
    assert listed.stdout.split() == list(PROGRAMS)


def test_nothing_missing_installs_nothing(tmp_path: Path) -> None:
    result, calls = run(tmp_path, list(PROGRAMS))
    assert result.returncode == 0, result.stderr
    assert calls == []
    assert result.stderr == ""


def test_missing_as_root_installs_exactly_the_missing_packages(tmp_path: Path) -> None:
    missing = sbin_free(["sip-tester", "espeak-ng", "chromium"])
    assert len(missing) >= 2
    present = [p for p in PROGRAMS if p not in missing]
    result, calls = run(tmp_path, present)
    assert result.returncode == 0, result.stderr
    assert calls == [
        "apt-get update -qq",
        f"apt-get install -y -qq --no-install-recommends {' '.join(missing)}",
    ]
    assert f"installing system packages the tests need: {' '.join(missing)}" in result.stderr


def test_missing_with_passwordless_sudo_installs_through_sudo(tmp_path: Path) -> None:
    missing = sbin_free(["graphviz"])
    result, calls = run(tmp_path, [p for p in PROGRAMS if p not in missing], uid=1000, sudo=True)
    assert result.returncode == 0, result.stderr
    assert calls == [
        "sudo true",
        "sudo apt-get",
        "apt-get update -qq",
        "sudo apt-get",
        "apt-get install -y -qq --no-install-recommends graphviz",
    ]


def test_missing_without_root_or_sudo_says_the_command_and_fails(tmp_path: Path) -> None:
    result, calls = run(tmp_path, ["kamailio", "dovecot-imapd", "graphviz"], uid=1000)
    missing = [p for p in PROGRAMS if p not in ("kamailio", "dovecot-imapd", "graphviz")]
    assert "libatomic1" in missing  # a library is looked up with ldconfig, not on PATH
    assert "kamailio-tls-modules" in missing  # a file is looked up where it must lie
    assert result.returncode == 1
    assert calls == []
    assert result.stderr.count("\n") == 1  # one clear line
    assert (
        f"run as root: apt-get update && apt-get install -y --no-install-recommends "
        f"{' '.join(missing)}"
    ) in result.stderr


def test_without_apt_get_says_so_and_fails(tmp_path: Path) -> None:
    result, calls = run(tmp_path, ["kamailio", "dovecot-imapd"], apt=False)
    assert result.returncode == 1
    assert calls == []
    assert "no apt-get" in result.stderr and "sip-tester" in result.stderr


def test_check_only_reports(tmp_path: Path) -> None:
    result, calls = run(tmp_path, ["kamailio", "dovecot-imapd"], args=("--check",))
    assert result.returncode == 1 and calls == []
    assert (
        "system packages missing: kamailio-tls-modules baresip-core dnsmasq-base iptables "
        "socat sip-tester sipvicious "
        "espeak-ng graphviz chromium libatomic1" in result.stderr
    )


def test_ci_and_the_makefile_keep_no_package_list_of_their_own() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make test" in ci and "apt-get" not in ci
    assert "./scripts/system-deps" in makefile and "apt-get" not in makefile
    for package in PROGRAMS:
        assert package not in ci.replace("make test", "")
