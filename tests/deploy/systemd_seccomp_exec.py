#!/usr/bin/python3
"""Runs a command inside the seccomp filters that a service unit's settings make systemd install,
so that a test can see atlsd work inside atlsd.service's filters without systemd as PID 1.

usage: systemd_seccomp_exec.py UNIT_FILE COMMAND [ARG...]
       systemd_seccomp_exec.py --list UNIT_FILE    the system calls SystemCallFilter= allows

Read from the unit file, as systemd 252 applies them (one filter each, stacked, as systemd
stacks them):
  SystemCallFilter=           an allow list, then ~deny lists taken out of it, with the groups of
                              this machine's systemd (`systemd-analyze syscall-filter`), plus
                              @default, which systemd adds to every allow list;
  RestrictAddressFamilies=    an allow list: socket() with another family fails EAFNOSUPPORT;
  MemoryDenyWriteExecute=yes  mmap() writable and executable, mprotect()/pkey_mprotect() to
                              executable, shmat() with SHM_EXEC fail EPERM;
  RestrictNamespaces=yes      clone(), unshare() and setns() with namespace flags fail EPERM,
                              clone3() fails ENOSYS (its flags are out of seccomp's reach; glibc
                              falls back to clone()).

One difference, on purpose: a system call outside SystemCallFilter= kills the process (SIGSYS)
instead of failing with SystemCallErrorNumber=, so that the test sees every call the unit would
refuse, including those whose failure the program would shrug off.

Needs Debian's python3-seccomp (deploy/setup.sh installs it), hence /usr/bin/python3.
"""
import errno
import os
import socket
import subprocess
import sys

import seccomp

# From <linux/sched.h>; the socket module and os have no names for all of them.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
PROT_WRITE = 0x2
PROT_EXEC = 0x4
SHM_EXEC = 0o100000
AF_MAX = 46  # <linux/socket.h> of Debian 12's kernel headers


def unit_settings(path):
    """Every KEY=VALUE of the unit's [Service] section, in order; a key may repeat."""
    settings = []
    section = None
    with open(path, encoding="utf-8") as unit:
        for line in unit:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]" and "=" in line:
                key, value = line.split("=", 1)
                settings.append((key.strip(), value.strip()))
    return settings


def syscall_groups():
    """systemd's groups, @name -> list of entries (names or @groups)."""
    out = subprocess.run(["systemd-analyze", "--no-pager", "syscall-filter"], check=True,
                         capture_output=True, text=True).stdout
    groups = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and current is not None:
            entry = line.strip()
            if not entry.startswith("#"):
                current.append(entry)
        else:
            current = None
    return groups


def expand(entries, groups):
    names = set()
    for entry in entries:
        if entry.startswith("@"):
            if entry not in groups:
                sys.exit(f"systemd_seccomp_exec: unknown system call group {entry}")
            names |= expand(groups[entry], groups)
        else:
            names.add(entry)
    return names


def allowed_syscalls(settings, groups):
    """SystemCallFilter= as systemd composes it: the first non-empty assignment sets the mode
    (allow list unless it starts with ~), an empty one resets, later ones of the same mode add,
    and of the other mode take away."""
    allow = None
    for key, value in settings:
        if key != "SystemCallFilter":
            continue
        if not value:
            allow = None
            continue
        deny = value.startswith("~")
        names = expand(value.lstrip("~").split(), groups)
        if allow is None:
            if deny:
                sys.exit("systemd_seccomp_exec: the unit's SystemCallFilter= is a deny list; "
                         "this checks allow lists only")
            allow = names | expand(["@default"], groups)
        elif deny:
            allow -= names
        else:
            allow |= names
    return allow


def allow_name(filt, name):
    """Allows a call by name. The groups name the calls of every architecture, and libseccomp
    knows most of them (it ignores those this architecture lacks); one it does not know at all
    is skipped, as systemd skips it."""
    try:
        filt.add_rule(seccomp.ALLOW, name)
    except RuntimeError:
        pass


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    if sys.argv[1] == "--list":
        print("\n".join(sorted(allowed_syscalls(unit_settings(sys.argv[2]), syscall_groups())
                               or [])))
        return
    settings = unit_settings(sys.argv[1])
    values = dict(settings)
    command = sys.argv[2:]

    families = values.get("RestrictAddressFamilies", "").split()
    if families:
        allowed = {getattr(socket, name) for name in families}
        filt = seccomp.SyscallFilter(seccomp.ALLOW)
        for family in range(AF_MAX + 1):
            if family not in allowed:
                filt.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket",
                              seccomp.Arg(0, seccomp.EQ, family))
        filt.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket",
                      seccomp.Arg(0, seccomp.GT, AF_MAX))
        filt.load()

    if values.get("MemoryDenyWriteExecute") == "yes":
        filt = seccomp.SyscallFilter(seccomp.ALLOW)
        both = PROT_WRITE | PROT_EXEC
        filt.add_rule(seccomp.ERRNO(errno.EPERM), "mmap",
                      seccomp.Arg(2, seccomp.MASKED_EQ, both, both))
        for name in ("mprotect", "pkey_mprotect"):
            filt.add_rule(seccomp.ERRNO(errno.EPERM), name,
                          seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
        filt.add_rule(seccomp.ERRNO(errno.EPERM), "shmat",
                      seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, SHM_EXEC))
        filt.load()

    if values.get("RestrictNamespaces") == "yes":
        filt = seccomp.SyscallFilter(seccomp.ALLOW)
        filt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        filt.add_rule(seccomp.ERRNO(errno.EPERM), "setns")
        for flag in (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER,
                     CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWTIME):
            # clone()'s flags are its first argument on x86-64, as unshare()'s are.
            for name in ("clone", "unshare"):
                filt.add_rule(seccomp.ERRNO(errno.EPERM), name,
                              seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        filt.load()

    # Last: loading a filter is itself a call the allow list may not contain.
    allow = allowed_syscalls(settings, syscall_groups())
    if allow is not None:
        filt = seccomp.SyscallFilter(seccomp.KILL_PROCESS)
        for name in sorted(allow):
            allow_name(filt, name)
        filt.load()

    os.execv(command[0], command)


if __name__ == "__main__":
    main()
