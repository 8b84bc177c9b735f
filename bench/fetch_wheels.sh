#!/usr/bin/env bash
# Download, here (where pip reaches PyPI), the wheels that a lent GPU box lacks for lamina, into
# .wheels/ (ignored by git; carried to the box with `carry: [".wheels"]`): bench/gpu_check.sh
# installs them there with `pip install --no-index`.
#
#   bash bench/fetch_wheels.sh            # or: make wheels
#   WHEELS=/some/dir PYTHON_VERSION=3.12 bash bench/fetch_wheels.sh
#
# The box (/work/.library/device/KINDS.md) has Python 3.12 with torch, lightning, triton,
# tensorboard, tokenizers, numpy, scipy, matplotlib, PyYAML, typing-extensions and pytest, and no
# network. Of lamina's dependencies (pyproject.toml) it lacks jsonargparse[signatures], whose
# `signatures` extra is docstring-parser and typeshed-client (typing-extensions only below 3.11),
# and `datasets`, which lamina imports only to read a Hugging Face dataset or local files: the
# built-in corpus (`data.source world`) never imports it, so gpu_check installs lamina with
# `--no-deps` and brings no `datasets` (nor its pyarrow/pandas tree). .wheels/extra holds the needs
# of those that the box already has (typing-extensions, PyYAML): pip takes them only if missing.
# Building lamina's editable install takes setuptools>=68 and wheel (pyproject's build-system, and
# wheel's packaging), in .wheels/build: pip puts them in its isolated build environment only,
# never into the box's.
# The device call that carries them, and the check's budget: docs/benchmarks.md, "The GPU check in one
# device call" (`carry: [".wheels"]`, about 3 MB with a 3 MB working tree, of the 64 MiB allowed).
# Versions: those of this checkout's .venv where it has them (the versions the suite ran with),
# else the newest. Pure-Python wheels but PyYAML's (for PYTHON_VERSION), a few MB in all.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=${WHEELS:-.wheels}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
PY=${PY:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
RUNTIME=(jsonargparse docstring-parser typeshed-client)
# Needs of the above that the box has already (pip takes these only where they are missing).
EXTRA=(typing-extensions PyYAML)
# pyproject's build-system, and wheel's own need.
BUILD=(setuptools wheel packaging)

pinned() {  # NAME==VERSION as installed here, else NAME
  local version
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1" 2>/dev/null) \
    && echo "$1==$version" || echo "$1"
}

download() {  # DIR SPEC...
  local dir=$1
  shift
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "$PYTHON_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$dir" "$@"
}

fetch() {  # DIR NAME...: each NAME at the version installed here, if any
  local dir=$1 name specs=()
  shift
  mkdir -p "$dir"
  for name in "$@"; do specs+=("$(pinned "$name")"); done
  download "$dir" "${specs[@]}"
}

rm -rf "$DEST"
fetch "$DEST" "${RUNTIME[@]}"
fetch "$DEST/extra" "${EXTRA[@]}"
fetch "$DEST/build" "${BUILD[@]}"
# setuptools' version check: pyproject's build-system asks for setuptools>=68.
ls "$DEST"/build/setuptools-*.whl >/dev/null

echo "fetch_wheels: $(find "$DEST" -name '*.whl' | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST:"
find "$DEST" -name '*.whl' | sort | sed 's/^/  /'
