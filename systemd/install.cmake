# The install-time half of atlsd's install rules: the systemd units and /etc/atlsd. Included from
# cmake_install.cmake (install(SCRIPT) in ../CMakeLists.txt), so it runs when `cmake --install`
# or cpack runs, with the prefix in effect then rather than the one the build was configured
# with. cpack installs with the prefix /usr whatever the build tree says, and
# `cmake --install --prefix` may change it too; resolved here:
#   - the units name atlsd and its config where this install puts them;
#   - the config directory is /etc/atlsd under the prefixes / and /usr (and /etc/opt/P under
#     /opt/P), where GNUInstallDirs places sysconfdir, rather than /usr/etc/atlsd.
#
# Reads ATLS_SOURCE_DIR, ATLS_BINARY_DIR and ATLS_{SBINDIR,SYSCONFDIR,DOCDIR,UNITDIR}, the
# configured CMAKE_INSTALL_<dir> values (relative to the prefix, or absolute), set by
# install(CODE) just before. Honours DESTDIR like every install rule (file(INSTALL) adds it).

# Where a relative install directory lands under this install's prefix. Binaries, docs and units
# land at prefix/dir, as the install(TARGETS|FILES) rules with relative destinations put them;
# sysconfdir follows GNUInstallDirs' special cases.
function(atls_full_dir out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
    return()
  endif()
  string(REGEX REPLACE "/+$" "" prefix "${CMAKE_INSTALL_PREFIX}")  # "/" becomes ""
  if(ARGN STREQUAL "SYSCONFDIR" AND (prefix STREQUAL "" OR prefix STREQUAL "/usr"))
    set(${out} "/${dir}" PARENT_SCOPE)
  elseif(ARGN STREQUAL "SYSCONFDIR" AND prefix MATCHES "^/opt/")
    set(${out} "/${dir}${prefix}" PARENT_SCOPE)
  else()
    set(${out} "${prefix}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

atls_full_dir(ATLS_FULL_SBINDIR "${ATLS_SBINDIR}")
atls_full_dir(ATLS_FULL_SYSCONFDIR "${ATLS_SYSCONFDIR}" SYSCONFDIR)
atls_full_dir(ATLS_FULL_DOCDIR "${ATLS_DOCDIR}")
atls_full_dir(atls_unitdir "${ATLS_UNITDIR}")

# The units are configured for this install into a directory of its own, removed once they are
# installed: two installs with other prefixes may run at once (the tests do), and each must
# install its own text.
string(MD5 atls_install_id "$ENV{DESTDIR}|${CMAKE_INSTALL_PREFIX}")
set(atls_units "${ATLS_BINARY_DIR}/systemd-units/${atls_install_id}")
configure_file("${ATLS_SOURCE_DIR}/systemd/atlsd.service.in" "${atls_units}/atlsd.service" @ONLY)
configure_file("${ATLS_SOURCE_DIR}/systemd/atlsd.socket.in" "${atls_units}/atlsd.socket" @ONLY)
file(INSTALL "${atls_units}/atlsd.service" "${atls_units}/atlsd.socket"
     DESTINATION "${atls_unitdir}" FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(REMOVE_RECURSE "${atls_units}")

# /etc/atlsd with the two example configs. The live config, atlsd.yaml, is the administrator's:
# never installed, never overwritten.
file(INSTALL "${ATLS_SOURCE_DIR}/config/atlsd.example.yaml"
             "${ATLS_SOURCE_DIR}/systemd/atlsd.socket-activated.example.yaml"
     DESTINATION "${ATLS_FULL_SYSCONFDIR}/atlsd"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
