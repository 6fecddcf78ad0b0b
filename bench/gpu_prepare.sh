#!/usr/bin/env bash
# Issue 15: gather what the offline GPU machine lacks, on a machine that reaches the package index.
#   bench/gpu_prepare.sh [OUTDIR]        (default: .gpu, git-ignored)
# Writes OUTDIR/wheels/ (Python 3.12 x86-64 wheels, xpcnn's own included), OUTDIR/data/fashion-mnist/
# (the four IDX files, SHA-256 checked) and OUTDIR/MANIFEST.sha256. Then: bench/gpu_check.sh on the GPU.
# Env: PYTHON (default python3; needs pip), XPCNN_FASHION_MNIST (folder of the IDX files,
#      default /usr/share/datasets/fashion-mnist, from Debian's dataset-fashion-mnist).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${1:-.gpu}
PYTHON=${PYTHON:-python3}
FASHION=${XPCNN_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
LIMIT_MIB=60  # the device tool carries at most 64 MiB of ignored paths

# What the GPU machine lacks (it has numpy, numba, cupy, torch, pytest, hypothesis): xpcnn's
# dependencies and array-api-strict (tests), with every dependency of theirs, named one by one.
WHEELS=(
  "array-api-compat>=1.11" "array-api-strict>=2.3" "tqdm>=4.66" "threadpoolctl>=3.1"
  "pooch>=1.8" platformdirs packaging requests urllib3 idna certifi
)
TARGET=(--only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64
        --platform manylinux_2_17_x86_64 --implementation cp --no-deps)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT/wheels" "$OUT/data/fashion-mnist"
rm -f "$OUT"/wheels/*.whl

echo "== wheels for Python 3.12 -> $OUT/wheels"
"$PYTHON" -m pip download -q "${TARGET[@]}" -d "$OUT/wheels" "${WHEELS[@]}"
# Its pure-Python wheel, so that every wheel here installs on any Python 3 (not only CPython 3.12).
"$PYTHON" -m pip download -q "${TARGET[@]}" --platform any --implementation py -d "$OUT/wheels" charset-normalizer

echo "== xpcnn's own wheel (from a copy of the working tree, so the checkout gets no build/)"
tar --exclude=__pycache__ -cf - pyproject.toml README.md xpcnn | tar -xf - -C "$work"
"$PYTHON" -m pip wheel -q --no-deps -w "$OUT/wheels" "$work"

echo "== every wheel's requirements are met by the wheels or by the GPU machine"
"$PYTHON" bench/gpu_report.py wheels "$OUT/wheels"

echo "== Fashion-MNIST -> $OUT/data/fashion-mnist"
if [[ ! -d $FASHION ]] && command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
  # Not installed here: fetch Debian's package and unpack it into the temporary folder only.
  echo "$FASHION is absent; unpacking Debian's dataset-fashion-mnist (apt-get download) without installing it"
  if (cd "$work" && apt-get download -q dataset-fashion-mnist >/dev/null); then
    dpkg-deb -x "$work"/dataset-fashion-mnist_*.deb "$work/deb"
    FASHION=$work/deb/usr/share/datasets/fashion-mnist
  fi
fi
copied=0
for stem in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  for name in "$stem.gz" "$stem"; do
    if [[ -f $FASHION/$name ]]; then
      cp "$FASHION/$name" "$OUT/data/fashion-mnist/"
      copied=$((copied + 1))
      break
    fi
  done
done
if ((copied < 4)); then
  echo "warning: only $copied of the 4 Fashion-MNIST files found in $FASHION;" \
    "install them with: apt-get install dataset-fashion-mnist (or set XPCNN_FASHION_MNIST=DIR)." \
    "gpu_check.sh then trains on the bundled mnist-sample instead." >&2
else
  "$PYTHON" bench/gpu_report.py sha256 "$OUT/data/fashion-mnist"
fi

echo "== manifest and size"
git rev-parse HEAD >"$OUT/COMMIT" 2>/dev/null || echo unknown >"$OUT/COMMIT"
git status --porcelain -- xpcnn pyproject.toml | sed 's/^/uncommitted: /' >>"$OUT/COMMIT" || true
(cd "$OUT" && find wheels data COMMIT -type f -print0 | sort -z | xargs -0 sha256sum) >"$OUT/MANIFEST.sha256"
(cd "$OUT" && find wheels data -type f -printf '%10s  %p\n' | sort -k2)
bytes=$(du -sb "$OUT" | cut -f1)
echo "total: $((bytes / 1024)) KiB ($((bytes / 1048576)) MiB) in $OUT"
if ((bytes > LIMIT_MIB * 1024 * 1024)); then
  echo "error: $OUT is over $LIMIT_MIB MiB; the device tool carries at most 64 MiB of ignored paths" >&2
  exit 1
fi
echo "done: on the GPU machine run  bash bench/gpu_check.sh OUTDIR  (device tool: carry [\"$OUT\"])"
