# The systemd units and the .deb (issue 8, parts 1 and 5), checked with systemd's and dpkg's own
# tools on installs into scratch roots: nothing outside them is touched, and no systemd needs to
# run. Every tool they use comes from deploy/setup.sh; a missing one fails the test.
set(atls_deploy ${CMAKE_CURRENT_SOURCE_DIR})
set(atls_units_test ${atls_deploy}/systemd_units_test.sh)

add_test(NAME "systemd: the installed atlsd.service and atlsd.socket pass systemd-analyze verify \
without a warning, with and without the privileged-port drop-in"
         COMMAND ${atls_units_test} verify ${PROJECT_BINARY_DIR} ${CMAKE_INSTALL_PREFIX})
add_test(NAME "systemd: systemd-analyze security rates the installed atlsd.service OK or better, \
with and without the privileged-port drop-in"
         COMMAND ${atls_units_test} security ${PROJECT_BINARY_DIR} ${CMAKE_INSTALL_PREFIX})
add_test(NAME "systemd: atlsd.socket hands atlsd.service the socket that the socket-activated \
example config listens on"
         COMMAND ${atls_units_test} socket ${PROJECT_BINARY_DIR} ${CMAKE_INSTALL_PREFIX})
set_tests_properties(
  "systemd: the installed atlsd.service and atlsd.socket pass systemd-analyze verify \
without a warning, with and without the privileged-port drop-in"
  "systemd: systemd-analyze security rates the installed atlsd.service OK or better, \
with and without the privileged-port drop-in"
  "systemd: atlsd.socket hands atlsd.service the socket that the socket-activated \
example config listens on"
  PROPERTIES TIMEOUT 30)

# Under ASan the sanitizer runtime makes calls of its own (setrlimit for core dumps, ptrace for
# the leak check) that are not atlsd's and that the unit would refuse: this one runs on the
# builds that ship.
if(NOT ATLS_SANITIZE AND NOT ATLS_FUZZ)
  add_test(NAME "systemd: atlsd serves TLS in and out, answers the admin endpoints, reloads and \
drains inside the seccomp filters of the installed atlsd.service"
           COMMAND ${atls_deploy}/systemd_sandbox_test.sh ${PROJECT_BINARY_DIR}
                   ${CMAKE_INSTALL_PREFIX} ${PROJECT_SOURCE_DIR})
  set_tests_properties(
    "systemd: atlsd serves TLS in and out, answers the admin endpoints, reloads and \
drains inside the seccomp filters of the installed atlsd.service"
    PROPERTIES TIMEOUT 60)
endif()

add_test(NAME "package: cpack makes atlsd_${PROJECT_VERSION}_<arch>.deb with the binaries, the \
units, /etc/atlsd and its example configs as conffiles, shlibdeps Depends and a postinst that \
creates the user; its atlsd checks the socket-activated example"
         COMMAND ${atls_deploy}/package_deb_test.sh ${PROJECT_BINARY_DIR} ${PROJECT_VERSION}
                 ${PROJECT_SOURCE_DIR})
set_tests_properties(
  "package: cpack makes atlsd_${PROJECT_VERSION}_<arch>.deb with the binaries, the \
units, /etc/atlsd and its example configs as conffiles, shlibdeps Depends and a postinst that \
creates the user; its atlsd checks the socket-activated example"
  PROPERTIES TIMEOUT 60)
