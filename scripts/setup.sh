#!/usr/bin/env bash
# One-step setup for a fresh machine: system packages the tests and demo use, then a virtualenv
# with pvae installed (editable) and its dev extras plus the cpu (or, on an NVIDIA host, gpu) ONNX Runtime. Idempotent: re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

# Debian packages: Fashion-MNIST (classification studies and tests), Chromium (headless tests of the live view),
# Prometheus (the monitoring tests), and a C compiler for the native kernels (pvae/native/*.c).
APT_PACKAGES=(dataset-fashion-mnist chromium prometheus)
command -v cc >/dev/null 2>&1 || APT_PACKAGES+=(gcc libc6-dev)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# torch is pinned: an open range pulls a multi-GB CUDA build; 2.13.0 installs the CPU wheel here.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
# ONNX Runtime flavour: PVAE_ORT=cpu|gpu, default gpu where an NVIDIA GPU is visible. The two packages
# share an import name, so switching removes the other one first.
ORT="${PVAE_ORT:-auto}"
if [ "$ORT" = auto ]; then
    ORT=cpu
    if compgen -G "/proc/driver/nvidia/gpus/*" >/dev/null; then ORT=gpu; fi
fi
OTHER=$([ "$ORT" = gpu ] && echo onnxruntime || echo onnxruntime-gpu)
"$VENV/bin/python" -m pip uninstall -q -y "$OTHER" >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$ORT,dev]" 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "import pvae, torch, onnxruntime; print(f'setup: pvae {pvae.__version__}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}')"
# The native kernels are an optional build step of the install; say plainly if they are missing (serving then
# samples with the bundle's graph and packs with numpy: the same results, slower).
"$VENV/bin/python" -c "
from pvae import native
try:
    native.library()
    print(f'setup: native kernels {native.library_path().name}')
except native.NativeUnavailable as exc:
    print(f'setup: WARNING: {exc}')
"

# Triton's perf_analyzer (tritonclient 2.51.0's binary + libb64 + libcudart, ~18 MB from the package
# registries) into runs/tools/perf_analyzer, for `make bench-oip` and its end-to-end test. Not fatal:
# without it that one test skips and says why.
if ! "$VENV/bin/pvae-bench-oip" --install-only --prefix runs/tools/perf_analyzer >/dev/null; then
    echo "setup: WARNING: perf_analyzer could not be installed; tests/test_bench_oip.py's end-to-end test will skip" >&2
fi
