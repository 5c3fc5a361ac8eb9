# Finds the BLAS and defines the interface target fastckpt_blas.
add_library(fastckpt_blas INTERFACE)
if(FASTCKPT_BLAS STREQUAL "scipy-openblas")
  if(NOT OpenBLAS_DIR)
    find_package(Python COMPONENTS Interpreter REQUIRED)
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -c "import scipy_openblas32 as s; print(s.get_lib_dir())"
      OUTPUT_VARIABLE _sob_lib OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _sob_rc)
    if(NOT _sob_rc EQUAL 0)
      message(FATAL_ERROR "FASTCKPT_BLAS=scipy-openblas needs the scipy-openblas32 package: pip install scipy-openblas32")
    endif()
    set(OpenBLAS_DIR "${_sob_lib}/cmake/openblas")
  endif()
  find_package(OpenBLAS CONFIG REQUIRED)
  target_link_libraries(fastckpt_blas INTERFACE OpenBLAS::OpenBLAS)
  target_compile_definitions(fastckpt_blas INTERFACE FASTCKPT_BLAS_SCIPY_OPENBLAS=1)
  set(FASTCKPT_BLAS_VENDOR "scipy-openblas32 ${OpenBLAS_VERSION}")
elseif(FASTCKPT_BLAS STREQUAL "system")
  find_package(BLAS REQUIRED)
  find_path(FASTCKPT_CBLAS_INCLUDE NAMES cblas.h mkl_cblas.h PATH_SUFFIXES openblas mkl)
  target_link_libraries(fastckpt_blas INTERFACE ${BLAS_LIBRARIES})
  if(FASTCKPT_CBLAS_INCLUDE)
    target_include_directories(fastckpt_blas INTERFACE ${FASTCKPT_CBLAS_INCLUDE})
  endif()
  if(BLA_VENDOR MATCHES "Intel")
    target_compile_definitions(fastckpt_blas INTERFACE FASTCKPT_BLAS_MKL=1)
  elseif(BLA_VENDOR MATCHES "OpenBLAS")
    # Its own thread pool must be held to one thread, as with the wheel's OpenBLAS.
    target_compile_definitions(fastckpt_blas INTERFACE FASTCKPT_BLAS_OPENBLAS=1)
  endif()
  set(FASTCKPT_BLAS_VENDOR "system ${BLA_VENDOR}")
elseif(FASTCKPT_BLAS STREQUAL "mkl-static")
  # Intel oneMKL linked statically from PyPI's mkl-static + mkl-include wheels (found through the
  # Python that runs CMake, or given as MKL_STATIC_LIB_DIR / MKL_INCLUDE_DIR). Sequential layer:
  # fastckpt runs its own OpenMP threads and calls the BLAS single-threaded from each.
  # Intel's documented static sequential LP64 link line: --start-group intel_lp64 sequential core
  # --end-group -lpthread -lm -ldl. x86-64 only (Intel ships no aarch64 MKL).
  if(NOT MKL_STATIC_LIB_DIR OR NOT MKL_INCLUDE_DIR)
    find_package(Python COMPONENTS Interpreter REQUIRED)
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -c [=[
import importlib.metadata as m, os
def where(dist, name):
    for f in m.distribution(dist).files or ():
        if f.name == name:
            return os.path.dirname(os.path.abspath(f.locate()))
    raise SystemExit(dist + ' has no ' + name)
print(where('mkl-static', 'libmkl_core.a') + ';' + where('mkl-include', 'mkl_cblas.h'))
]=]
      OUTPUT_VARIABLE _mkl_dirs OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _mkl_rc)
    if(NOT _mkl_rc EQUAL 0)
      message(FATAL_ERROR "FASTCKPT_BLAS=mkl-static needs the mkl-static and mkl-include packages: "
                          "pip install mkl-static mkl-include (${_mkl_dirs})")
    endif()
    list(GET _mkl_dirs 0 _mkl_lib)
    list(GET _mkl_dirs 1 _mkl_inc)
    set(MKL_STATIC_LIB_DIR "${_mkl_lib}" CACHE PATH "Directory of libmkl_core.a")
    set(MKL_INCLUDE_DIR "${_mkl_inc}" CACHE PATH "Directory of mkl_cblas.h")
  endif()
  foreach(_mkl_part intel_lp64 sequential core)
    if(NOT EXISTS "${MKL_STATIC_LIB_DIR}/libmkl_${_mkl_part}.a")
      message(FATAL_ERROR "FASTCKPT_BLAS=mkl-static: ${MKL_STATIC_LIB_DIR}/libmkl_${_mkl_part}.a not found")
    endif()
  endforeach()
  # INTEL_MKL_VERSION is YYYYUUPP (20260200 = 2026.2.0, the wheel's version).
  file(STRINGS "${MKL_INCLUDE_DIR}/mkl_version.h" _mkl_ver REGEX "#define INTEL_MKL_VERSION ")
  string(REGEX REPLACE ".*INTEL_MKL_VERSION +([0-9][0-9][0-9][0-9])([0-9][0-9])([0-9][0-9]).*" "\\1;\\2;\\3"
         _mkl_ver "${_mkl_ver}")
  list(TRANSFORM _mkl_ver REPLACE "^0([0-9])$" "\\1")
  list(JOIN _mkl_ver "." _mkl_version)
  find_package(Threads REQUIRED)
  target_include_directories(fastckpt_blas INTERFACE "${MKL_INCLUDE_DIR}")
  target_link_libraries(fastckpt_blas INTERFACE
    -Wl,--start-group
    "${MKL_STATIC_LIB_DIR}/libmkl_intel_lp64.a"
    "${MKL_STATIC_LIB_DIR}/libmkl_sequential.a"
    "${MKL_STATIC_LIB_DIR}/libmkl_core.a"
    -Wl,--end-group
    # Keep MKL's symbols out of our dynamic symbol tables: another MKL or BLAS in the same
    # process (numpy, PyTorch) must not bind to ours, nor ours to theirs.
    -Wl,--exclude-libs,libmkl_intel_lp64.a:libmkl_sequential.a:libmkl_core.a
    Threads::Threads m ${CMAKE_DL_LIBS})
  target_compile_definitions(fastckpt_blas INTERFACE FASTCKPT_BLAS_MKL=1)
  set(FASTCKPT_BLAS_VENDOR "mkl-static ${_mkl_version} sequential")
else()
  message(FATAL_ERROR "FASTCKPT_BLAS must be scipy-openblas, mkl-static or system, got '${FASTCKPT_BLAS}'")
endif()
message(STATUS "fastckpt BLAS: ${FASTCKPT_BLAS_VENDOR}")
