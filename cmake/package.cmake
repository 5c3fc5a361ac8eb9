# Installs libfastckpt, its public headers and a CMake package config, so that a downstream project
# can do:
#   cmake -Dfastckpt_DIR=$(python -m fastckpt --cmake-dir) ...
#   find_package(fastckpt CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE fastckpt::fastckpt)
include(CMakePackageConfigHelpers)

set(FASTCKPT_INSTALL_CMAKEDIR ${FASTCKPT_INSTALL_LIBDIR}/cmake/fastckpt)

install(TARGETS fastckpt EXPORT fastckptTargets
        LIBRARY DESTINATION ${FASTCKPT_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${FASTCKPT_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${FASTCKPT_INSTALL_LIBDIR})
# Only the embedding API; format.h and the internals stay private to the build.
install(FILES ${PROJECT_SOURCE_DIR}/csrc/include/fastckpt/fastckpt.h
              ${PROJECT_SOURCE_DIR}/csrc/include/fastckpt/fastckpt.hpp
        DESTINATION ${FASTCKPT_INSTALL_INCLUDEDIR}/fastckpt)
install(EXPORT fastckptTargets NAMESPACE fastckpt:: DESTINATION ${FASTCKPT_INSTALL_CMAKEDIR})

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/fastckptConfig.cmake.in
                              ${CMAKE_CURRENT_BINARY_DIR}/fastckptConfig.cmake
                              INSTALL_DESTINATION ${FASTCKPT_INSTALL_CMAKEDIR})
# The C ABI may change before 1.0: only the same minor version is compatible.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/fastckptConfigVersion.cmake
                                 VERSION ${FASTCKPT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/fastckptConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/fastckptConfigVersion.cmake
        DESTINATION ${FASTCKPT_INSTALL_CMAKEDIR})
