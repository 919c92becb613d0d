#!/usr/bin/env python
"""What an environment lacks of fpt's requirements, installing it, and wheelhouses for offline
nodes. Behind ``tools/setup.sh --into-current-env / --wheelhouse`` and ``tools/make_wheelhouse.sh``.

    wheelhouse.py plan    [--have FREEZE.txt]
        what the running interpreter's environment (or the one ``pip freeze`` wrote to FREEZE.txt)
        keeps and what it lacks of requirements/base.txt (+ setuptools to install fpt editable)
    wheelhouse.py install [--wheelhouse DIR]
        installs into the running interpreter's environment only what it lacks or has out of our
        ranges; every distribution already there stays at its version (pip constraints), torch
        above all; with DIR, from that folder alone (``pip --no-index``)
    wheelhouse.py make OUT [--python 3.12] [--platform TAG ...] [--have FREEZE.txt] [--with-torch]
        writes to OUT, as wheels for the target Python and platform, what the target lacks
        (dependencies included, those the target has left out) and our detectron2 wheel

Uses only the standard library and pip (its vendored ``packaging``), so that it runs in any
environment pip runs in: a GPU node's own Python included.
"""

import argparse
import email.parser
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

try:
    from packaging.markers import Marker
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version
except ImportError:  # an environment without packaging: pip always vendors it
    from pip._vendor.packaging.markers import Marker
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import InvalidVersion, Version

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, "requirements", "base.txt")
LOCK = os.path.join(REPO, "requirements", "lock.txt")
# installed without their declared dependencies (the file says why for each)
NO_DEPS = os.path.join(REPO, "requirements", "no-deps.txt")
# installing fpt editable (pyproject.toml's build-system) without build isolation needs it
BUILD = ["setuptools>=77"]
# the oldest torch / torchvision we support (README); never installed or replaced by this tool
TORCH_FLOOR = {"torch": "2.11", "torchvision": "0.26"}
TORCH_DEFAULT = {"torch": "2.14.1", "torchvision": "0.29.1"}
DETECTRON2 = ("pb1-detectron2", "detectron2")
MANIFEST = "fpt-wheelhouse.json"


def say(msg):
    print(f"[wheelhouse] {msg}", flush=True)


def fail(msg):
    raise SystemExit(f"[wheelhouse] {msg}")


# ---------------------------------------------------------------------------------------------
# requirements, environments, plans
# ---------------------------------------------------------------------------------------------
def read_requirements(path):
    reqs = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if line:
                try:
                    reqs.append(Requirement(line))
                except ValueError as e:
                    fail(f"{path}:{n}: {line!r} is not a requirement ({e})")
    return reqs


def read_lock():
    """requirements/lock.txt as {name: version}."""
    return {canonicalize_name(r.name): str(r.specifier)[2:] for r in read_requirements(LOCK)}


def read_freeze(path):
    """A ``pip freeze`` (or ``pip list --format=freeze``) file as {name: version or None}.
    ``name @ URL`` lines and bare names count as present with an unknown version."""
    have = {}
    try:
        f = open(path)
    except OSError as e:
        fail(f"--have {path}: {e.strerror} (a `pip freeze` of the target expected)")
    with f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-"):
                continue
            m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:===?\s*(\S+)|@\s*\S+)?", line)
            if not m:
                fail(f"--have {path}:{n}: {line!r} is not a `pip freeze` line (name==version)")
            have[canonicalize_name(m.group(1))] = m.group(2)
    return have


def installed():
    """The running interpreter's distributions (all of sys.path) as {name: version}."""
    from importlib import metadata

    have = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            have.setdefault(canonicalize_name(name), dist.version)
    return have


def satisfied(req, version):
    """Does an installed ``version`` (None: unknown) meet ``req``?"""
    if version is None or not req.specifier:
        return True
    try:
        return req.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def wanted(env=None):
    """fpt's requirements for a target whose markers are ``env`` (None: this interpreter),
    those of requirements/no-deps.txt last."""
    reqs = read_requirements(BASE) + [Requirement(b) for b in BUILD] + read_requirements(NO_DEPS)
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def no_deps_names():
    """The distributions installed without their declared dependencies."""
    return {canonicalize_name(r.name) for r in read_requirements(NO_DEPS)}


def plan(reqs, have):
    """Split ``reqs`` into (kept: [(req, version)], needed: [(req, version or None)])."""
    kept, needed = [], []
    for req in reqs:
        name = canonicalize_name(req.name)
        if name in have and satisfied(req, have[name]):
            kept.append((req, have[name]))
        else:
            needed.append((req, have.get(name)))
    return kept, needed


def describe(kept, needed):
    for req, v in needed:
        why = "missing" if v is None else f"has {v}, out of range"
        say(f"  needed  {req}  ({why})")
    say(
        "  kept    "
        + ", ".join(f"{r.name} {v or '(version unknown)'}" for r, v in kept)
        + f"  ({len(kept)} already there)"
    )


def check_torch(have, what):
    for name, floor in TORCH_FLOOR.items():
        v = have.get(name)
        if v is None:
            fail(
                f"{what} has no {name}: fpt uses the environment's own torch and torchvision "
                f"(>= {TORCH_FLOOR['torch']} / {TORCH_FLOOR['torchvision']}); install them first, "
                "or run tools/setup.sh without --into-current-env"
            )
        if Version(v).release < Version(floor).release:
            fail(f"{what} has {name} {v}; fpt needs {name} >= {floor} (README: tested set-ups)")


# ---------------------------------------------------------------------------------------------
# install into the running environment
# ---------------------------------------------------------------------------------------------
def pip(args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check"], text=True, **kw
    )


def cmd_plan(args):
    have = read_freeze(args.have) if args.have else installed()
    kept, needed = plan(wanted(), have)
    describe(kept, needed)
    return 0


def cmd_install(args):
    have = installed()
    check_torch(have, f"this environment ({sys.executable})")
    kept, needed = plan(wanted(), have)
    src = ["--no-index", "--find-links", args.wheelhouse] if args.wheelhouse else []
    if args.wheelhouse and not os.path.isdir(args.wheelhouse):
        fail(f"--wheelhouse {args.wheelhouse}: no such folder (tools/make_wheelhouse.sh makes one)")
    say(f"environment {sys.prefix} (Python {platform.python_version()})")
    say(
        "  kept    "
        + ", ".join(f"{n} {have[n]}" for n in TORCH_FLOOR)
        + "  (the environment's own: never installed or replaced here)"
    )
    describe(kept, needed)
    if not needed:
        say("nothing to install")
        return 0
    replaced = {canonicalize_name(r.name) for r, v in needed if v is not None}
    lock = read_lock()
    no_deps = no_deps_names()
    with tempfile.TemporaryDirectory() as tmp:
        reqs, cons = os.path.join(tmp, "needed.txt"), os.path.join(tmp, "constraints.txt")
        bare = os.path.join(tmp, "no-deps.txt")
        for path, group in ((reqs, False), (bare, True)):
            with open(path, "w") as f:
                f.writelines(
                    f"{r}\n" for r, _ in needed if (canonicalize_name(r.name) in no_deps) == group
                )
        with open(cons, "w") as f:
            # every distribution there stays as it is (torch above all) unless we replace it;
            # what comes new comes at our tested versions where they fit
            for name, v in sorted(have.items()):
                if name not in replaced and name != "fpt" and v:
                    f.write(f"{name}=={v}\n")
            if not args.wheelhouse:  # a wheelhouse holds what it was made with
                for name, v in sorted(lock.items()):
                    if name not in have or name in replaced:
                        f.write(f"{name}=={v}\n")
        for path, extra in ((reqs, []), (bare, ["--no-deps"])):
            r = pip(
                ["install", "-q", *src, *extra, "-r", path, "-c", cons],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            if r.returncode:
                break
        if r.returncode:
            tail = "\n".join(l for l in r.stdout.splitlines() if l.strip())[-2500:]
            where = f"from {args.wheelhouse}" if args.wheelhouse else "from the package index"
            fail(f"pip could not install what this environment lacks {where}:\n{tail}")
    after = installed()
    new = sorted(f"{n} {v}" for n, v in after.items() if have.get(n) != v)
    say(f"installed {len(new)}: {', '.join(new)}")
    changed = [n for n in have if n in after and have[n] != after[n] and n not in replaced]
    if changed:  # the constraints forbid it: a guard, should pip ever ignore them
        fail(f"pip changed distributions it was told to keep: {', '.join(changed)}")
    return 0


# ---------------------------------------------------------------------------------------------
# make a wheelhouse for another environment
# ---------------------------------------------------------------------------------------------
class Target:
    """The Python and platform the wheels are for: pip's download options and the markers."""

    def __init__(self, python, platforms):
        self.python = python or "%d.%d" % sys.version_info[:2]
        if not re.fullmatch(r"3\.\d+", self.python):
            fail(f"--python {self.python}: a version such as 3.12 expected")
        self.platforms = platforms or []
        self.here = self.python == "%d.%d" % sys.version_info[:2] and not self.platforms
        machine = platform.machine()
        for p in self.platforms:
            machine = "aarch64" if p.endswith("aarch64") else "x86_64" if "x86_64" in p else machine
        self.env = {
            "python_version": self.python,
            "python_full_version": self.python + ".0",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "os_name": "posix",
            "platform_machine": machine,
        }
        if self.here:
            self.env = None  # this interpreter's own markers

    def pip_options(self):
        if self.here:
            return []
        abi = "cp" + self.python.replace(".", "")
        opts = ["--python-version", self.python, "--implementation", "cp"]
        opts += ["--abi", abi, "--abi", "abi3", "--abi", "none"]
        for p in self.platforms:
            opts += ["--platform", p]
        return opts

    def wheel_fits(self, filename):
        """Can a wheel built here (from an sdist) serve the target?"""
        return self.here or filename.endswith("-none-any.whl")

    def evaluate(self, marker, extra=""):
        """``marker`` for the target (packaging fills what ``env`` leaves out from here)."""
        return Marker(str(marker)).evaluate({**(self.env or {}), "extra": extra})


def wheel_metadata(path):
    with zipfile.ZipFile(path) as z:
        (name,) = [n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        return email.parser.Parser().parsestr(z.read(name).decode("utf-8", "replace"))


def download(reqs, out, target, workdir):
    """``pip download --no-deps`` of ``reqs`` for ``target`` into ``out``; sdists are built into
    wheels here (pure-Python ones only serve another target). Returns the new wheel paths."""
    before = set(os.listdir(out))
    dl = os.path.join(workdir, "download")
    os.makedirs(dl, exist_ok=True)
    r = pip(
        ["download", "--no-deps", "--prefer-binary", "-q", "-d", dl, *target.pip_options()]
        + [str(q) for q in reqs],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    if r.returncode:
        lines = [l for l in r.stdout.splitlines() if "ERROR" in l or "error" in l.lower()]
        fail(
            "pip download failed for the target (Python "
            f"{target.python}{', ' + ' '.join(target.platforms) if target.platforms else ''}):\n"
            + "\n".join(lines[-8:] or r.stdout.splitlines()[-8:])
        )
    for f in sorted(os.listdir(dl)):
        path = os.path.join(dl, f)
        if f.endswith(".whl"):
            shutil.move(path, os.path.join(out, f))
            continue
        # an sdist: a wheel built here
        built = os.path.join(workdir, "built")
        r = pip(["wheel", "--no-deps", "-q", "-w", built, path], capture_output=True)
        if r.returncode:
            fail(f"building a wheel of {f} failed:\n{(r.stderr or r.stdout)[-2000:]}")
        os.remove(path)
        for w in os.listdir(built):
            if not target.wheel_fits(w):
                fail(
                    f"{f}: no wheel for Python {target.python} on the target platform on the "
                    f"index, and the one built here ({w}) is not pure Python"
                )
            shutil.move(os.path.join(built, w), os.path.join(out, w))
    new = sorted(set(os.listdir(out)) - before)
    return [os.path.join(out, f) for f in new if f.endswith(".whl")]


def resolve(needed, have, target, out):
    """Download ``needed`` and, round by round, the dependencies the target lacks.
    Returns {name: (version, wheel filename)}."""
    lock = read_lock()
    no_deps = no_deps_names()
    chosen, pending = {}, [(req, "") for req, _ in needed]
    with tempfile.TemporaryDirectory() as work:
        while pending:
            batch = {}  # name -> merged Requirement
            for req, why in pending:
                name = canonicalize_name(req.name)
                if why and name in have and satisfied(req, have[name]):
                    continue  # a dependency the target has (what plan() chose is downloaded)
                if name in chosen:
                    if not satisfied(req, chosen[name][0]):
                        fail(
                            f"{why or 'fpt'} needs {req}, but {name} {chosen[name][0]} was "
                            "already chosen: no single version fits both"
                        )
                    continue
                merged = batch.get(name)
                spec = req.specifier & merged.specifier if merged else req.specifier
                batch[name] = Requirement(f"{name}{spec}")
                if name in have and have[name] is not None and name in TORCH_FLOOR:
                    fail(f"the target's {name} {have[name]} does not meet {req} ({why})")
            pending = []
            if not batch:
                break
            pins = []
            for name, req in batch.items():
                pin = lock.get(name)
                if pin and req.specifier.contains(Version(pin), prereleases=True):
                    pins.append(Requirement(f"{name}=={pin}"))
                else:
                    pins.append(req)
            say(f"downloading {len(pins)}: {', '.join(str(p) for p in pins)}")
            for path in download(pins, out, target, work):
                meta = wheel_metadata(path)
                name = canonicalize_name(meta["Name"])
                chosen[name] = (meta["Version"], os.path.basename(path))
                for line in [] if name in no_deps else meta.get_all("Requires-Dist") or []:
                    dep = Requirement(line)
                    if dep.marker is None or target.evaluate(dep.marker):
                        pending.append((dep, f"{name} {meta['Version']}"))
    return chosen


def detectron2_wheel(out):
    """Our detectron2 wheel (tools/build_detectron2.py's route: v0.6 Python-only, or the source
    FPT_DETECTRON2 names, built Python-only: it must serve another interpreter)."""
    cmd = [sys.executable, os.path.join(REPO, "tools", "build_detectron2.py"), "--wheel-into", out]
    r = subprocess.run(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode:
        fail(f"building the detectron2 wheel failed:\n{r.stdout[-2000:]}")
    return r.stdout.strip().splitlines()[-1]


def cmd_make(args):
    target = Target(args.python, args.platform)
    have = read_freeze(args.have) if args.have else {}
    reqs = wanted(target.env)
    if args.with_torch:
        reqs += [
            Requirement(f"{n}=={os.environ.get('FPT_' + n.upper() + '_VERSION', v)}")
            for n, v in TORCH_DEFAULT.items()
        ]
    elif args.have:
        check_torch(have, f"the target ({args.have})")
    kept, needed = plan(reqs, have)
    # a build requirement of unknown version (a freeze without versions) is carried: 1 MiB
    for req in map(Requirement, BUILD):
        if canonicalize_name(req.name) in have and have[canonicalize_name(req.name)] is None:
            kept = [(r, v) for r, v in kept if r.name != req.name]
            needed.append((req, None))
    os.makedirs(args.out, exist_ok=True)
    old = [f for f in os.listdir(args.out) if f.endswith(".whl") or f == MANIFEST]
    if old:
        say(f"{args.out}: clearing the {len(old)} files of an earlier wheelhouse")
        for f in old:
            os.remove(os.path.join(args.out, f))
    what = f"Python {target.python}" + (
        f", {' '.join(target.platforms)}" if target.platforms else ""
    )
    say(f"target: {what}; {'its freeze ' + args.have if args.have else 'an empty environment'}")
    describe(kept, needed)
    chosen = resolve(needed, have, target, args.out)
    if not any(canonicalize_name(d) in have for d in DETECTRON2):
        wheel = os.path.basename(detectron2_wheel(args.out))
        name, version = wheel.split("-")[:2]
        chosen[canonicalize_name(name)] = (version, wheel)
    files = sorted(f for f in os.listdir(args.out) if f.endswith(".whl"))
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in files)
    manifest = {
        "python": target.python,
        "platforms": target.platforms,
        "have": os.path.abspath(args.have) if args.have else None,
        "wheels": {f: os.path.getsize(os.path.join(args.out, f)) for f in files},
        "bytes": total,
    }
    with open(os.path.join(args.out, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)
    for f in files:
        say(f"  {os.path.getsize(os.path.join(args.out, f)) / 2**20:7.2f} MiB  {f}")
    say(f"{len(files)} wheels, {total / 2**20:.1f} MiB in {args.out}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="what is kept and what is needed")
    p.add_argument("--have", help="a `pip freeze` of the target instead of this environment")
    p = sub.add_parser("install", help="install what this environment lacks")
    p.add_argument("--wheelhouse", help="install from this folder only (pip --no-index)")
    p = sub.add_parser("make", help="write a wheelhouse for a target environment")
    p.add_argument("out")
    p.add_argument("--python", help="the target's Python version, e.g. 3.12 (default: this one)")
    p.add_argument(
        "--platform",
        action="append",
        help="pip platform tag(s) of the target, e.g. manylinux_2_28_x86_64 (default: this one)",
    )
    p.add_argument("--have", help="the target's `pip freeze`: only what it lacks is written")
    p.add_argument(
        "--with-torch", action="store_true", help="also torch and torchvision (large; a fresh venv)"
    )
    args = ap.parse_args()
    return {"plan": cmd_plan, "install": cmd_install, "make": cmd_make}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
