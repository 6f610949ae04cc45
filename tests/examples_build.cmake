# Installs the built Weir into a prefix and builds the example apps (examples/) against it, as a
# user would; the example tests then run them (tests/CMakeLists.txt). Invoked by ctest with
# -DBUILD_DIR, -DSOURCE_DIR and -DWORK_DIR.
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
function(run_step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
                  TIMEOUT 600)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "step failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()
run_step(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix")
run_step(${CMAKE_COMMAND} -S "${SOURCE_DIR}/examples" -B "${WORK_DIR}/build" -G Ninja
         "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix")
string(TIMESTAMP started "%s")
run_step(${CMAKE_COMMAND} --build "${WORK_DIR}/build")
string(TIMESTAMP finished "%s")
math(EXPR took "${finished} - ${started}")
message(STATUS "the examples built in ${took} s")
