"""The runbook works as written: the dev TLS files are usable by the service users, and every unit it starts exists."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import servicekit.registry  # noqa: F401  (fills SERVICES)
from eventbus.natsserver import find_binary
from servicekit.runtime import service_named

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "ops" / "tls" / "make-dev-certs.sh"
RUNBOOK = (ROOT / "ops" / "RUNBOOK.md").read_text()
# The service users of the units: root makes the files for another user, anyone else for itself.
OWNER = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def etc() -> Iterator[Path]:
    """A directory other users can traverse, as /etc/rr is (pytest's own tmp dirs are private to their owner)."""
    base = Path(tempfile.mkdtemp(prefix="rr-runbook-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base)


@pytest.fixture(scope="module")
def certs(etc: Path) -> Path:
    out = etc / "tls"
    done = subprocess.run(["bash", str(SCRIPT), "--owner", OWNER, "--client-owner", OWNER, str(out), "nats-a.rr.internal"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ship ca.pem to every node" in done.stdout
    return out


def test_dev_certs_are_reachable_and_keys_private_and_owned_by_the_service_users(certs: Path) -> None:
    assert mode(certs) == 0o755  # the users can reach their files
    for public in ("ca.pem", "server.pem", "client.pem"):
        assert mode(certs / public) == 0o644, public
    for key in ("ca-key.pem", "server-key.pem", "client-key.pem"):
        assert mode(certs / key) == 0o600, key
    uid = pwd.getpwnam(OWNER).pw_uid
    assert {(certs / f).stat().st_uid for f in ("server.pem", "server-key.pem", "client.pem", "client-key.pem")} == {uid}
    assert (certs / "ca-key.pem").stat().st_uid == os.geteuid()  # the CA key stays with whoever made it


def test_the_nats_user_can_load_the_servers_tls_files(certs: Path, etc: Path) -> None:
    config = etc / "tls.conf"
    config.write_text(f'port: 4222\ntls {{\n  cert_file: "{certs}/server.pem"\n  key_file: "{certs}/server-key.pem"\n'
                      f'  ca_file: "{certs}/ca.pem"\n}}\n')
    config.chmod(0o644)
    as_user = ["runuser", "-u", OWNER, "--"] if os.geteuid() == 0 else []
    done = subprocess.run([*as_user, find_binary(), "-t", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_missing_owner_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--owner", "no-such-user-rr", str(tmp_path / "tls")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "useradd -r no-such-user-rr" in done.stderr
    assert not (tmp_path / "tls").exists()


def test_every_unit_the_runbook_starts_is_a_registered_service_and_the_api_is_started() -> None:
    started = set(re.findall(r"rr-service@([a-z]+)", RUNBOOK))  # by name, or by a former one (@scheduler)
    assert all(service_named(name) for name in started), {name for name in started if service_named(name) is None}
    enabled = " ".join(line for line in RUNBOOK.splitlines() if "enable --now" in line)
    assert "rr-service@api" in enabled


def test_the_runbook_ships_the_ca_to_every_node_and_uses_the_scripts_owner_options() -> None:
    assert "--owner nats" in RUNBOOK and "--client-owner rr" in RUNBOOK
    assert "/etc/rr/tls/ca.pem" in RUNBOOK.split("6. **Nodes**")[1].split("7. **Check**")[0]
