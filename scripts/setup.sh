#!/usr/bin/env bash
# Create or reuse .venv in the repository root with the exact pins of requirements.lock,
# then install lictrain itself in editable mode. Idempotent: a second run whose pins match
# the stamp left by the first returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv
stamp_of() { cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1; }
want=$(stamp_of)
if [[ -x $VENV/bin/python && -f $VENV/.lictrain-stamp && "$(cat $VENV/.lictrain-stamp)" == "$want" ]]; then
    echo "setup: .venv is up to date" >&2
    exit 0
fi
echo "setup: building .venv (first time: a few minutes)" >&2
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel 2> >(grep -v "is ignored" >&2)
"$VENV/bin/python" -m pip install -q -r requirements.lock 2> >(grep -v "is ignored" >&2)
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . 2> >(grep -v "is ignored" >&2)
"$VENV/bin/python" -m pip check >&2
"$VENV/bin/python" -c "import lictrain, torch, torchvision, compressai" >&2
echo "$want" > "$VENV/.lictrain-stamp"
echo "setup: .venv ready" >&2
