# Installs the built Weir into a prefix and builds the example apps (examples/) against it, as a
# user would; the example tests then run them (tests/CMakeLists.txt). Invoked by ctest with
# -DBUILD_DIR, -DSOURCE_DIR and -DWORK_DIR.
include(${CMAKE_CURRENT_LIST_DIR}/install_steps.cmake)
run_step(${CMAKE_COMMAND} -S "${SOURCE_DIR}/examples" -B "${WORK_DIR}/build" -G Ninja
         "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix")
string(TIMESTAMP started "%s")
run_step(${CMAKE_COMMAND} --build "${WORK_DIR}/build")
string(TIMESTAMP finished "%s")
math(EXPR took "${finished} - ${started}")
message(STATUS "the examples built in ${took} s")
