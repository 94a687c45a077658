#!/usr/bin/env bash
# Build the linelight .deb packages (amd64 and arm64) into dist/ from the current commit.
# Options are passed on to packaging/build_deb.py (--arch, --out, --commit, --version, ...).
# Needs: git, dpkg-deb, readelf (binutils) and a Python 3.11 with pip that can reach PyPI
# (or a warm wheel cache, ~/.cache/linelight/wheels).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$here/../.venv/bin/python" ]; then python="$here/../.venv/bin/python"; else python=python3; fi
fi
exec "$python" "$here/build_deb.py" "$@"
