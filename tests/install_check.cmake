# Installs the built Weir into a temporary prefix, builds examples/app against it with
# find_package(weir), and runs it on the bundled example. Invoked by ctest with -DBUILD_DIR,
# -DSOURCE_DIR and -DWORK_DIR.
include(${CMAKE_CURRENT_LIST_DIR}/install_steps.cmake)
set(launcher "")
find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM)
  set(launcher "-DCMAKE_CXX_COMPILER_LAUNCHER=${CCACHE_PROGRAM}")
endif()
run_step(${CMAKE_COMMAND} -S "${SOURCE_DIR}/examples/app" -B "${WORK_DIR}/app" -G Ninja
         "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix" ${launcher})
run_step(${CMAKE_COMMAND} --build "${WORK_DIR}/app")
run_step("${WORK_DIR}/app/top_keys" "${SOURCE_DIR}/examples/transactions/pipeline.toml"
         "${WORK_DIR}/store" merchant_hourly total 3)
message(STATUS "${step_output}")
string(REGEX MATCHALL "\nm0[0-9][0-9] +[0-9]+\\.[0-9][0-9]" rows "\n${step_output}")
list(LENGTH rows n)
if(NOT n EQUAL 3)
  message(FATAL_ERROR "expected 3 ranked merchants, got:\n${step_output}")
endif()
if(NOT step_output MATCHES "merchant_hourly: 20004 events, 240 windows committed")
  message(FATAL_ERROR "unexpected summary:\n${step_output}")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
