"""lintian finds no error and no warning that is not overridden, with a reason, in packaging/."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.packaging.debs import ARCHES, REPO, Deb

OVERRIDES = REPO / "packaging" / "debian" / "lintian-overrides"


@pytest.mark.parametrize("arch", ARCHES)
def test_lintian_reports_no_errors_or_warnings(debs: dict[str, Deb], arch: str) -> None:
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed (`make apt` installs it)")
    proc = subprocess.run(["lintian", "--no-cfg", "--info", "--display-experimental",
                           "--pedantic", str(debs[arch].path)],
                          capture_output=True, text=True, timeout=300)
    tags = [line for line in proc.stdout.splitlines() if re.match(r"^[EWIPXO]: ", line)]
    assert tags or proc.returncode == 0, proc.stderr
    bad = [t for t in tags if t.startswith(("E: ", "W: "))]
    assert not bad, "lintian:\n" + "\n".join(bad)
    # An override that no longer matches anything hides nothing and misleads the reader.
    unused = [t for t in tags if "unused-override" in t or "mismatched-override" in t]
    assert not unused, "\n".join(unused)


def test_every_lintian_override_gives_its_reason() -> None:
    lines = OVERRIDES.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            assert i > 0 and lines[i - 1].startswith("#"), \
                f"{OVERRIDES.name}:{i + 1}: override without a '# reason' comment above it"
