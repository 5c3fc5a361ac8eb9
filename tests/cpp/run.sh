#!/usr/bin/env bash
# C/C++ tests of the embedding API against the *installed* fastckpt (.ci/run calls this after
# `pip install .`; locally: activate a venv with fastckpt installed, then bash tests/cpp/run.sh).
#   1. fixtures written by Python (tests/cpp/make_fixtures.py)
#   2. examples/embed built as a separate CMake project with find_package(fastckpt CONFIG REQUIRED),
#      run, and its output compared with Python's model.predict (max |diff| <= 1e-6)
#   3. tests/cpp built the same way, run with ctest
#   4. the C/C++ tests again, with the library built from source under AddressSanitizer + UBSan
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python}
PY=$(command -v "$PY")
export PATH="$(dirname "$PY"):$PATH"  # tools pip installs below land next to the interpreter
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Outside the source tree, so `python -m fastckpt` finds the installed package, not ./fastckpt.
cd "$WORK"
if ! command -v cmake >/dev/null; then "$PY" -m pip install -q cmake; fi
if ! command -v ninja >/dev/null && ! command -v make >/dev/null; then "$PY" -m pip install -q ninja; fi
GEN=()
if command -v ninja >/dev/null; then GEN=(-G Ninja); fi
JOBS=$(nproc 2>/dev/null || echo 2)
CMAKE_DIR=$("$PY" -m fastckpt --cmake-dir)
echo "fastckpt CMake package: $CMAKE_DIR"

echo "--- fixtures"
"$PY" "$ROOT/tests/cpp/make_fixtures.py" "$WORK/fixtures"

echo "--- examples/embed as a downstream project"
cmake -S "$ROOT/examples/embed" -B "$WORK/example" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
  -Dfastckpt_DIR="$CMAKE_DIR" >/dev/null
cmake --build "$WORK/example" -j "$JOBS"
"$WORK/example/embed_predict" "$WORK/fixtures/model" "$WORK/fixtures/x.txt" > "$WORK/example.out"
"$PY" - "$WORK" <<'PYEOF'
import sys
import numpy as np
work = sys.argv[1]
got = np.loadtxt(f"{work}/example.out", dtype=np.float64).astype(np.float32)
want = np.fromfile(f"{work}/fixtures/y32.f32", np.float32).reshape(got.shape)
diff = float(np.abs(got - want).max())
print(f"example vs model.predict: {got.shape[0]} rows, max |diff| = {diff:g}")
sys.exit(0 if diff <= 1e-6 else 1)
PYEOF

echo "--- tests/cpp against the installed package"
cmake -S "$ROOT/tests/cpp" -B "$WORK/tests" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
  -Dfastckpt_DIR="$CMAKE_DIR" -DFASTCKPT_FIXTURES="$WORK/fixtures" >/dev/null
cmake --build "$WORK/tests" -j "$JOBS"
(cd "$WORK/tests" && ctest --output-on-failure)

echo "--- tests/cpp under AddressSanitizer + UBSan (library built from source)"
cmake -S "$ROOT" -B "$WORK/asan" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DFASTCKPT_PYTHON=OFF -DFASTCKPT_SANITIZE=ON -DFASTCKPT_BUILD_TESTS=ON \
  -DFASTCKPT_FIXTURES="$WORK/fixtures" -DPython_EXECUTABLE="$PY" >/dev/null
cmake --build "$WORK/asan" -j "$JOBS" --target fastckpt_test_capi fastckpt_test_cpp
(cd "$WORK/asan" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ctest --output-on-failure)
echo "C++ tests passed"
