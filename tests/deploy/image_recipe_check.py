#!/usr/bin/env python3
"""Checks the container image recipe (deploy/Containerfile, deploy/image/) without a container
engine, so that the recipe cannot drift from what is tested.

  image_recipe_check.py --source REPO --build BUILD_TREE [--sanitized]

1. Reads deploy/Containerfile: two stages from Debian 12, every RUN a script of deploy/image/
   (the build stage: install-packages.sh build-packages, build.sh, stage.sh; the final stage:
   install-packages.sh runtime-packages, add-user.sh), the staged tree copied to /, a numeric
   USER equal to the one add-user.sh creates, an ENTRYPOINT that is a staged file, EXPOSE of the
   example configs' ports.
2. Copies exactly what the build stage COPYs into a scratch /src and runs build.sh
   --configure-only on it: CMake fails at generation when a source file is missing.
3. Reads both package lists with install-packages.sh --check (the parser the image build uses):
   every name must be a package installed here; build-packages must hold deploy/setup.sh's build
   group.
4. Puts the binaries of BUILD_TREE (the suite's own build: no rebuild) where that configured
   tree expects them and stages it with stage.sh, so that the install too reads only the copied
   files; runs the staged atlsd and atlsctl with --version; and checks that every library they
   load (ldd, NEEDED, and the TCTI modules of dlopened-libraries) comes from runtime-packages or
   from what apt installs with them (dpkg -S and the packages' Depends on this Debian 12
   machine), and that every package of runtime-packages is needed (or marked "data:").

  image_recipe_check.py ... --recipe-only   steps 1 and 3 only (for the check's own tests)

With --sanitized (an ATLS_SANITIZE build tree), the sanitizer runtimes are not asked of the
image. Exits 1 with one line per problem, 0 when every check passes.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

problems = []
passed = []


def fail(message):
    problems.append(message)


def ok(message):
    passed.append(message)


def run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)


# --- the Containerfile -----------------------------------------------------------------------


class Instruction:
    def __init__(self, line, keyword, rest):
        self.line = line
        self.keyword = keyword
        self.rest = rest

    def flags_and_body(self):
        """Leading --flag=value options (RUN --mount, COPY --from), then the rest."""
        flags = {}
        body = self.rest
        while body.startswith("--"):
            word, _, body = body.partition(" ")
            name, _, value = word[2:].partition("=")
            flags.setdefault(name, []).append(value)
            body = body.lstrip()
        return flags, body


def parse_containerfile(path):
    """Stages as lists of Instructions, with continuation lines joined and comments dropped."""
    stages = []
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, rest = text.partition(" ")
        instruction = Instruction(start, keyword.upper(), rest.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        if not stages:
            fail(f"Containerfile:{start}: {keyword} before the first FROM")
            continue
        stages[-1].append(instruction)
    return stages


def exec_form(instruction, body):
    try:
        argv = json.loads(body)
    except json.JSONDecodeError:
        fail(f"Containerfile:{instruction.line}: {instruction.keyword} is not in exec form "
             f"(a JSON list): {body}")
        return None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) or not argv:
        fail(f"Containerfile:{instruction.line}: {instruction.keyword} must be a list of strings")
        return None
    return argv


def check_containerfile(repo, containerfile):
    """Returns what later checks need: the build stage's context copies, the final stage's
    view of the scripts, the staging directory and the user."""
    stages = parse_containerfile(containerfile)
    facts = {"copies": [], "runs": {}, "staging": None, "user": None, "entrypoint": None,
             "cmd": None, "expose": set()}
    if len(stages) != 2:
        fail(f"Containerfile: {len(stages)} stages; expected 2 (build, final)")
        return facts
    build, final = stages
    base = build[0].rest.split()
    if not re.fullmatch(r"(docker\.io/(library/)?)?debian:12", base[0]) or base[1:] != ["AS", "build"]:
        fail(f"Containerfile:{build[0].line}: the build stage must be FROM debian:12 AS build, "
             f"not {build[0].rest}")
    if not re.fullmatch(r"(docker\.io/(library/)?)?debian:12-slim", final[0].rest):
        fail(f"Containerfile:{final[0].line}: the final stage must be FROM debian:12-slim, "
             f"not {final[0].rest}")

    image_dir = repo / "deploy" / "image"

    def script_of(instruction, argv, mounts, copied):
        """The repository file behind argv[0]: a COPY of deploy/image/ or a bind mount of it."""
        for target, source in mounts.items():
            if argv[0].startswith(target.rstrip("/") + "/"):
                return repo / source / argv[0][len(target.rstrip("/")) + 1:]
        for dest, source in copied.items():
            if argv[0] == dest:
                return repo / source
        fail(f"Containerfile:{instruction.line}: RUN {argv[0]}: not a script copied or mounted "
             f"from deploy/image/")
        return None

    for name, stage in (("build", build), ("final", final)):
        copied = {}  # path in the stage -> path in the repository, for files from the context
        runs = []
        for instruction in stage[1:]:
            flags, body = instruction.flags_and_body()
            if instruction.keyword == "COPY":
                words = shlex.split(body)
                sources, dest = words[:-1], words[-1]
                if "from" in flags:
                    facts["staging_copy"] = (flags["from"][0], sources, dest, instruction.line)
                    continue
                for source in sources:
                    if not (repo / source).exists():
                        fail(f"Containerfile:{instruction.line}: COPY {source}: no such path in "
                             f"the repository")
                    target = dest + Path(source).name if dest.endswith("/") else dest
                    if name == "build":
                        facts["copies"].append((source, target))
                    copied[target] = source
                    if (repo / source).is_dir():
                        for f in (repo / source).rglob("*"):
                            copied[target + "/" + str(f.relative_to(repo / source))] = str(
                                f.relative_to(repo))
            elif instruction.keyword == "RUN":
                mounts = {}
                for mount in flags.get("mount", []):
                    fields = dict(f.partition("=")[::2] for f in mount.split(","))
                    if fields.get("type") != "bind":
                        fail(f"Containerfile:{instruction.line}: RUN --mount={mount}: only bind "
                             f"mounts of deploy/image are expected")
                        continue
                    mounts[fields["target"]] = fields["source"]
                argv = exec_form(instruction, body)
                if argv is None:
                    continue
                script = script_of(instruction, argv, mounts, copied)
                if script is None:
                    continue
                if script.parent != image_dir:
                    fail(f"Containerfile:{instruction.line}: RUN {argv[0]} is {script}, not a "
                         f"script of deploy/image/")
                    continue
                if not os.access(script, os.X_OK):
                    fail(f"Containerfile:{instruction.line}: {script} is not executable")
                # Arguments that name files of the recipe, as repository paths.
                args = []
                for a in argv[1:]:
                    resolved = None
                    for target, source in mounts.items():
                        if a.startswith(target.rstrip("/") + "/"):
                            resolved = repo / source / a[len(target.rstrip("/")) + 1:]
                    if a in copied:
                        resolved = repo / copied[a]
                    args.append(str(resolved.relative_to(repo)) if resolved else a)
                runs.append((script.name, args, instruction.line))
            elif instruction.keyword == "USER" and name == "final":
                facts["user"] = (instruction.rest, instruction.line)
            elif instruction.keyword == "ENTRYPOINT" and name == "final":
                facts["entrypoint"] = exec_form(instruction, instruction.rest)
            elif instruction.keyword == "CMD" and name == "final":
                facts["cmd"] = exec_form(instruction, instruction.rest)
            elif instruction.keyword == "EXPOSE" and name == "final":
                for port in instruction.rest.split():
                    facts["expose"].add(int(port.split("/")[0]))
            elif instruction.keyword == "HEALTHCHECK":
                fail(f"Containerfile:{instruction.line}: HEALTHCHECK: the pod's probes do this "
                     f"job (and the image has no HTTP client to run one with)")
        facts["runs"][name] = runs

    expected = {
        "build": [("install-packages.sh", ["deploy/image/build-packages"]),
                  ("build.sh", None), ("stage.sh", None)],
        "final": [("install-packages.sh", ["--clean-apt-lists", "deploy/image/runtime-packages"]),
                  ("add-user.sh", None)],
    }
    for name, steps in expected.items():
        got = [(script, args) for script, args, _ in facts["runs"][name]]
        if [s for s, _ in got] != [s for s, _ in steps]:
            fail(f"Containerfile: the {name} stage runs {[s for s, _ in got]}; expected "
                 f"{[s for s, _ in steps]} in that order")
            continue
        for (script, args), (_, want) in zip(got, steps):
            if want is not None and args != want:
                fail(f"Containerfile: the {name} stage runs {script} {args}; expected {want}")
    build_runs = {s: a for s, a, _ in facts["runs"]["build"]}
    if "build.sh" in build_runs and "stage.sh" in build_runs:
        src, build_dir = (build_runs["build.sh"] + [None, None])[:2]
        stage_args = build_runs["stage.sh"]
        if len(stage_args) != 2 or stage_args[0] != build_dir:
            fail(f"Containerfile: stage.sh {stage_args} does not stage build.sh's build "
                 f"directory {build_dir}")
        else:
            facts["staging"] = stage_args[1]
        facts["src"] = src
    copy = facts.get("staging_copy")
    if copy is None:
        fail("Containerfile: the final stage does not COPY --from=build the staged tree")
    else:
        stage_name, sources, dest, line = copy
        if stage_name != "build" or [s.rstrip("/") for s in sources] != [facts["staging"]] or dest != "/":
            fail(f"Containerfile:{line}: COPY --from={stage_name} {sources} {dest}; expected "
                 f"COPY --from=build {facts['staging']}/ /")
    final_runs = {s: a for s, a, _ in facts["runs"]["final"]}
    if "add-user.sh" in final_runs and facts["user"]:
        user, line = facts["user"]
        ids = final_runs["add-user.sh"]
        if not re.fullmatch(r"[0-9]+:[0-9]+", user):
            fail(f"Containerfile:{line}: USER {user} must be numeric UID:GID (runAsNonRoot can "
                 f"verify only a numeric user)")
        elif user != ":".join(ids):
            fail(f"Containerfile:{line}: USER {user} is not the user add-user.sh creates "
                 f"({':'.join(ids)})")
        elif user.startswith("0:"):
            fail(f"Containerfile:{line}: USER {user} is root")
    elif facts["user"] is None:
        fail("Containerfile: the final stage has no USER: it would run as root")
    if facts["cmd"] and facts["cmd"] != ["--config", "/etc/atlsd/atlsd.yaml"]:
        fail(f"Containerfile: CMD {facts['cmd']}; expected --config /etc/atlsd/atlsd.yaml")
    if not problems:
        ok("Containerfile: two Debian 12 stages, every RUN a script of deploy/image/")
    return facts


def listen_ports(config_file):
    """Ports of the non-loopback TCP listeners (and the admin listener) of an atlsd config,
    read without a YAML library: `listen: HOST:PORT` lines."""
    ports = set()
    for line in config_file.read_text().splitlines():
        m = re.match(r"\s*(?:- )?listen:\s*\"?(\[[^\]]*\]|[^:\s]+):([0-9]+)", line)
        if m and not m.group(1).startswith(("127.", "localhost", "[::1]")):
            ports.add(int(m.group(2)))
    return ports


# --- the package lists ------------------------------------------------------------------------


def read_list(repo, name):
    """A package list through install-packages.sh --check, the parser the image build uses."""
    script = repo / "deploy" / "image" / "install-packages.sh"
    result = run([str(script), "--check", str(repo / "deploy" / "image" / name)])
    if result.returncode != 0:
        fail(f"deploy/image/{name}: {result.stderr.strip()}")
    return result.stdout.split()


def setup_build_group(repo):
    """The packages of the `# build` group of deploy/setup.sh's packages=( ... )."""
    text = (repo / "deploy" / "setup.sh").read_text()
    block = re.search(r"packages=\((.*?)\n\)", text, re.S)
    group = []
    if not block:
        fail("deploy/setup.sh: no packages=( ... ) list")
        return group
    inside = False
    for line in block.group(1).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            inside = stripped == "# build"
            continue
        if inside:
            group += stripped.split()
    if not group:
        fail("deploy/setup.sh: no `# build` group in packages=( ... )")
    return group


def package_of(path):
    """The installed package that owns a file (usr-merged paths tried both ways)."""
    candidates = [path, os.path.realpath(path)]
    for p in list(candidates):
        if p.startswith("/usr/"):
            candidates.append(p[4:])
        else:
            candidates.append("/usr" + p)
    for p in candidates:
        result = run(["dpkg", "-S", p])
        if result.returncode == 0:
            for line in result.stdout.splitlines():
                if not line.startswith("diversion"):
                    return line.split(":")[0].split(",")[0].strip()
    return None


def depends_closure(packages):
    """The installed packages apt brings with `packages`: Depends and Pre-Depends, recursively,
    every installed alternative."""
    seen = set()
    queue = list(packages)
    while queue:
        p = queue.pop()
        if p in seen:
            continue
        seen.add(p)
        result = run(["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", p])
        if result.returncode != 0:
            continue
        for clause in result.stdout.split(","):
            for alternative in clause.split("|"):
                name = alternative.strip().split(" ")[0].split(":")[0]
                if name and name not in seen:
                    queue.append(name)
    return seen


def libraries_of(binary):
    """(NEEDED sonames, {soname: path} of everything ldd resolves)."""
    dump = run(["objdump", "-p", str(binary)])
    needed = re.findall(r"^\s*NEEDED\s+(\S+)", dump.stdout, re.M)
    resolved = {}
    for line in run(["ldd", str(binary)]).stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m:
            resolved[m.group(1)] = m.group(2)
        else:
            m = re.match(r"\s*(/\S+) \(", line)
            if m:
                resolved[os.path.basename(m.group(1))] = m.group(1)
    if "not found" in run(["ldd", str(binary)]).stdout:
        fail(f"{binary}: ldd finds a library missing on this machine")
    return needed, resolved


def check_libraries(repo, staged_binaries, runtime, sanitized):
    before = len(problems)
    sanitizer = re.compile(r"lib(asan|ubsan|lsan|tsan)\.so")
    runtime_set = set(runtime)
    closure = depends_closure(runtime)
    used = set()
    for binary in staged_binaries:
        needed, resolved = libraries_of(binary)
        for soname in needed:
            if sanitized and sanitizer.match(soname):
                continue
            path = resolved.get(soname)
            package = package_of(path) if path else None
            if package is None:
                fail(f"{binary.name} needs {soname}, which no Debian package provides here")
                continue
            used.add(package)
            if package not in runtime_set:
                fail(f"{binary.name} needs {soname} from {package}, which "
                     f"deploy/image/runtime-packages does not list")
        for soname, path in resolved.items():
            if soname.startswith("linux-vdso") or (sanitized and sanitizer.match(soname)):
                continue
            package = package_of(path)
            if package is None:
                fail(f"{binary.name} loads {path}, which no Debian package provides here")
            elif package not in closure:
                fail(f"{binary.name} loads {soname} from {package}, which neither "
                     f"deploy/image/runtime-packages nor its dependencies bring")
    dlopened = []
    for line in (repo / "deploy" / "image" / "dlopened-libraries").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            dlopened.append(line)
    cache = run(["ldconfig", "-p"]).stdout
    for soname in dlopened:
        m = re.search(r"^\s*" + re.escape(soname) + r" \([^)]*x86-64[^)]*\) => (\S+)", cache, re.M)
        if not m:
            fail(f"deploy/image/dlopened-libraries: {soname} is not installed here")
            continue
        package = package_of(m.group(1))
        used.add(package)
        if package not in runtime_set:
            fail(f"{soname} (loaded at run time) comes from {package}, which "
                 f"deploy/image/runtime-packages does not list")
    comments = {}
    for line in (repo / "deploy" / "image" / "runtime-packages").read_text().splitlines():
        name, _, comment = line.partition("#")
        if name.strip():
            comments[name.strip()] = comment.strip()
    for package in runtime:
        if package not in used and not comments.get(package, "").startswith("data:"):
            fail(f"deploy/image/runtime-packages: {package} provides no library the staged "
                 f"binaries load (mark it `# data: why` if it is needed for its files)")
    if len(problems) == before:
        ok(f"libraries: {len(used)} packages of runtime-packages provide what the staged "
           f"binaries load")


def check_build(repo, facts, build, runtime, sanitized):
    """Steps 2 and 4: the build context configures, the build tree stages, runs and loads only
    libraries of runtime-packages."""
    with tempfile.TemporaryDirectory(prefix="atlsd-image-") as scratch:
        scratch = Path(scratch)
        # The build context as the build stage sees it: exactly what it COPYs, under /src.
        src = facts.get("src") or "/src"
        root = scratch / "root"
        for source, target in facts["copies"]:
            dest = root / target.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if (repo / source).is_dir():
                shutil.copytree(repo / source, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(repo / source, dest)
        image_build = scratch / "build"
        configured = run([str(repo / "deploy" / "image" / "build.sh"), "--configure-only",
                          str(root / src.lstrip("/")), str(image_build)])
        if configured.returncode != 0:
            fail("build.sh --configure-only on the files the build stage copies failed:\n" +
                 configured.stdout[-2000:] + configured.stderr[-3000:])
            return
        ok("the files the build stage copies configure")
        # What build.sh would compile there, taken from the suite's build tree instead (no
        # rebuild): the install then reads the copied sources, as the image's does, so a file
        # read only at install time that the build stage does not copy fails here too.
        for binary in ("daemon/atlsd", "daemon/atlsctl"):
            (image_build / binary).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(build) / binary, image_build / binary)

        staging = scratch / "staging"
        staged = run([str(repo / "deploy" / "image" / "stage.sh"), str(image_build),
                      str(staging)])
        if staged.returncode != 0:
            fail(f"stage.sh on the image's build tree: {staged.stderr.strip()[-3000:]}")
        else:
            files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
            expected = ["etc/atlsd/atlsd.example.yaml", "usr/bin/atlsctl", "usr/sbin/atlsd"]
            if files != expected:
                fail(f"stage.sh staged {files}; expected {expected}")
            entry = facts.get("entrypoint")
            if not entry or not (staging / entry[0].lstrip("/")).is_file():
                fail(f"Containerfile: ENTRYPOINT {entry} is not a staged file")
            for binary, expect in ((staging / "usr/sbin/atlsd", "atlsd "),
                                   (staging / "usr/bin/atlsctl", "atlsctl ")):
                version = run([str(binary), "--version"])
                if version.returncode != 0 or not version.stdout.startswith(expect):
                    fail(f"staged {binary.name} --version: exit {version.returncode}, "
                         f"{version.stdout.strip()} {version.stderr.strip()}")
            ok("stage.sh staged atlsd and atlsctl, which run")
            check_libraries(repo, [staging / "usr/sbin/atlsd", staging / "usr/bin/atlsctl"],
                            runtime, sanitized)



# --- main ---------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--build", required=True, type=Path)
    parser.add_argument("--sanitized", action="store_true")
    # Only steps 1 and 3 (the Containerfile and the lists): for the check's own negative tests.
    parser.add_argument("--recipe-only", action="store_true")
    args = parser.parse_args()
    repo = args.source.resolve()

    facts = check_containerfile(repo, repo / "deploy" / "Containerfile")

    wanted = listen_ports(repo / "config" / "atlsd.example.yaml") | listen_ports(
        repo / "deploy" / "kubernetes" / "base" / "atlsd.yaml")
    if not wanted <= facts["expose"]:
        fail(f"Containerfile: EXPOSE {sorted(facts['expose'])} misses the example configs' "
             f"ports {sorted(wanted - facts['expose'])}")

    build_packages = read_list(repo, "build-packages")
    missing = [p for p in setup_build_group(repo) if p not in build_packages]
    if missing:
        fail(f"deploy/image/build-packages misses {missing} of deploy/setup.sh's build group")
    runtime = read_list(repo, "runtime-packages")
    for package in runtime:
        if package.endswith("-dev"):
            fail(f"deploy/image/runtime-packages: {package} is a build package")

    if not args.recipe_only:
        check_build(repo, facts, args.build, runtime, args.sanitized)

    for message in problems:
        print(f"FAIL: {message}")
    for message in passed:
        print(f"ok: {message}")
    if problems:
        print(f"image recipe: {len(problems)} problem(s)")
        return 1
    print("image recipe: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
