#!/usr/bin/env python3
"""The image recipe check must reject a broken recipe: each case copies what the check reads
(deploy/, config/ and the files the build stage copies), breaks one thing in the copy, and
requires image_recipe_check.py to exit 1 naming that fault. Recipe cases run with --recipe-only;
the two cases that need the build tree (a build-stage COPY left out, a library's package left
out) run the whole check.

  image_recipe_broken_test.py REPO BUILD_TREE [--sanitized]
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# (what breaks, file, text, replacement, expected message (or a tuple of acceptable ones),
#  needs the build tree)
CASES = [
    ("the final stage runs as root", "deploy/Containerfile", "USER 10001:10001\n", "",
     "the final stage has no USER: it would run as root", False),
    ("a user name instead of a numeric USER", "deploy/Containerfile", "USER 10001:10001",
     "USER atlsd", "USER atlsd must be numeric UID:GID", False),
    ("USER is not the user the image creates", "deploy/Containerfile", "USER 10001:10001",
     "USER 10002:10002", "USER 10002:10002 is not the user add-user.sh creates (10001:10001)",
     False),
    ("the final stage from a full Debian", "deploy/Containerfile",
     "FROM docker.io/library/debian:12-slim", "FROM docker.io/library/debian:12",
     "the final stage must be FROM debian:12-slim", False),
    ("a build stage from another release", "deploy/Containerfile",
     "FROM docker.io/library/debian:12 AS build", "FROM docker.io/library/debian:13 AS build",
     "the build stage must be FROM debian:12 AS build", False),
    ("a RUN step inline rather than a script", "deploy/Containerfile",
     'RUN ["/src/deploy/image/stage.sh", "/build", "/staging"]',
     "RUN DESTDIR=/staging cmake --install /build",
     "RUN is not in exec form", False),
    ("the staged tree is not what the final stage copies", "deploy/Containerfile",
     "COPY --from=build /staging/ /", "COPY --from=build /build/ /",
     "expected COPY --from=build /staging/ /", False),
    ("the runtime packages are not installed", "deploy/Containerfile",
     "RUN --mount=type=bind,source=deploy/image,target=/image "
     '["/image/install-packages.sh", "--clean-apt-lists", "/image/runtime-packages"]\n', "",
     "the final stage runs ['add-user.sh']; expected ['install-packages.sh', 'add-user.sh']",
     False),
    ("an attested port not exposed", "deploy/Containerfile", "EXPOSE 8443 9443 9901",
     "EXPOSE 9443 9901", "misses the example configs' ports [8443]", False),
    ("a HEALTHCHECK", "deploy/Containerfile", "ENTRYPOINT",
     'HEALTHCHECK CMD ["/usr/bin/true"]\nENTRYPOINT', "HEALTHCHECK: the pod's probes", False),
    ("a package name that does not exist", "deploy/image/runtime-packages", "libssl3\n",
     "libssl3\nlibssl-three\n", "package 'libssl-three' is not installed on this machine", False),
    ("a build package of setup.sh missing from the image", "deploy/image/build-packages",
     "libtss2-dev\n", "", "build-packages misses ['libtss2-dev']", False),
    ("a -dev package in the final image", "deploy/image/runtime-packages", "libssl3\n",
     "libssl3\nlibssl-dev  # data: headers\n", "libssl-dev is a build package", False),
    ("a source directory the build stage does not copy", "deploy/Containerfile",
     "COPY daemon /src/daemon\n", "",
     "build.sh --configure-only on the files the build stage copies failed", True),
    # systemd/ is read when installing (the units); whether configure reads it too is the
    # CMake files' business, so either step may be the one that fails.
    ("a directory the install reads, not copied", "deploy/Containerfile",
     "COPY systemd /src/systemd\n", "",
     ("stage.sh on the image's build tree",
      "build.sh --configure-only on the files the build stage copies failed"), True),
    ("a library whose package is not listed", "deploy/image/runtime-packages", "libfmt9\n", "",
     "atlsd needs libfmt.so.9 from libfmt9, which deploy/image/runtime-packages does not list",
     True),
]

# What image_recipe_check.py reads, copied for each case.
PATHS = ["CMakeLists.txt", "config", "daemon", "deploy", "lib", "systemd"]


def main():
    repo = Path(sys.argv[1]).resolve()
    build = sys.argv[2]
    extra = sys.argv[3:]
    check = repo / "tests" / "deploy" / "image_recipe_check.py"
    failures = []
    with tempfile.TemporaryDirectory(prefix="atlsd-image-broken-") as scratch:
        for i, (what, file, text, replacement, expected, full) in enumerate(CASES):
            copy = Path(scratch) / f"case{i}"
            for p in PATHS:
                if (repo / p).is_dir():
                    shutil.copytree(repo / p, copy / p, symlinks=True)
                else:
                    copy.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(repo / p, copy / p)
            if i == 0:
                control = subprocess.run(
                    [sys.executable, str(check), "--source", str(copy), "--build", build,
                     "--recipe-only"] + extra, capture_output=True, text=True, timeout=120)
                if control.returncode != 0:
                    print(f"FAIL: the unbroken copy is rejected:\n{control.stdout}")
                    return 1
            target = copy / file
            content = target.read_text()
            if text not in content:
                failures.append(f"{what}: {file} no longer contains {text!r}; update the case")
                continue
            target.write_text(content.replace(text, replacement, 1))
            argv = [sys.executable, str(check), "--source", str(copy), "--build", build] + extra
            if not full:
                argv.append("--recipe-only")
            result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
            accepted = expected if isinstance(expected, tuple) else (expected,)
            if (result.returncode != 1 or not any(e in result.stdout for e in accepted)
                    or result.stderr):
                failures.append(f"{what}: expected exit 1 and {expected!r}; got exit "
                                f"{result.returncode}:\n{result.stdout}{result.stderr}")
            else:
                print(f"ok: rejected: {what}")
            shutil.rmtree(copy)
    for f in failures:
        print(f"FAIL: {f}")
    print(f"image recipe check: {len(CASES) - len(failures)} of {len(CASES)} broken recipes "
          f"rejected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
