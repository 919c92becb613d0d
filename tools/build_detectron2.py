#!/usr/bin/env python
"""Build and install detectron2: our Python-only v0.6 wheel by default, or any source you name.

detectron2 is not published on PyPI as a wheel. Two routes:

**Default** (no source named): the registry sdist ``pb1-detectron2==0.6`` (detectron2 v0.6's
Python sources, without the C++/CUDA sources of ``detectron2._C``):

1. nothing is done when an importable detectron2 is already installed (for example one built
   from source with its CUDA ops on a GPU cluster): that one is used untouched;
2. otherwise the sdist is downloaded from the configured package index (sha256-pinned),
3. its own ``setup.py`` runs unchanged, with ``setuptools.setup`` wrapped from outside so that
   ``ext_modules=[]`` (no compiled ``_C``; :mod:`fpt.compat` supplies fallbacks), the
   ``detectron2/model_zoo/configs`` package data is included (its setup.py misses it) and the
   stale ``black==21.4b2`` pin is dropped,
4. the wheel is installed with ``--no-deps`` (dependencies come pinned from requirements/).

**A source you name** (``--source`` or ``FPT_DETECTRON2``): a detectron2 source tree, a source
archive (``.tar.gz``, ``.tgz``, ``.zip``; e.g. GitHub's archive of a commit) or a pip requirement
(``git+https://github.com/facebookresearch/detectron2.git@COMMIT``, a URL). It is built as a
wheel in a temporary copy (the tree you name is not written to) and installed in place of any
detectron2 already there:

- with its compiled ops (``detectron2._C``: C++ ops, built with the machine's compiler), and its
  CUDA ops when torch is a CUDA build and ``nvcc`` is found, or when ``FORCE_CUDA=1``;
  ``FPT_DETECTRON2_CUDA=0`` builds the C++ ops only (a CPU machine whose torch is a CUDA build);
- Python-only with ``--python-only`` or ``FPT_DETECTRON2_PYONLY=1`` (as the default route).

Re-running with the same source, route and torch installs nothing (recorded in
``<venv>/fpt-detectron2.json``).

**Offline**: ``--wheel-into DIR`` writes the route's wheel, built Python-only (it then serves
any interpreter), into a wheelhouse (tools/make_wheelhouse.sh); ``--wheelhouse DIR`` installs
the one found there when no detectron2 is importable.

Usage: python tools/build_detectron2.py [--force] [--cache DIR] [--source SPEC] [--python-only]
                                        [--wheel-into DIR | --wheelhouse DIR]
"""

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_FILE = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
WHEEL_GLOB = "pb1_detectron2-0.6-"
# requirements of detectron2's setup.py that we drop: a 2021 beta of black pinned exactly
# (we pin a current black in requirements/), and caffe2-only packages.
DROPPED_REQUIREMENTS = ("black", "future", "pydot")
# distributions that install the ``detectron2`` package (ours, upstream's)
DISTRIBUTIONS = (SDIST_NAME, "detectron2")
RECORD = os.path.join(sys.prefix, "fpt-detectron2.json")


def log(msg):
    print(f"[build_detectron2] {msg}", flush=True)


def fail(msg):
    raise SystemExit(f"[build_detectron2] {msg}")


def index_url():
    """The package index pip is configured with (PIP_INDEX_URL, pip config, or pip's default)."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True,
            text=True,
        )
        url = out.stdout.strip() if out.returncode == 0 else ""
    if not url:
        from pip._internal.models.index import PyPI

        url = PyPI.simple_url
    return url.rstrip("/")


def find_sdist_url():
    page = f"{index_url()}/{SDIST_NAME}/"
    req = urllib.request.Request(
        page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        body = r.read().decode()
        ctype = r.headers.get("Content-Type", "")
    if "json" in ctype:
        for f in json.loads(body)["files"]:
            if f["filename"] == SDIST_FILE:
                return urllib.parse.urljoin(page, f["url"])
    else:
        for href in re.findall(r'href="([^"]+)"', body):
            if href.split("#")[0].endswith("/" + SDIST_FILE):
                return urllib.parse.urljoin(page, href.split("#")[0])
    fail(f"{SDIST_FILE} not found on the package index {page}")


def fetch_sdist(cache):
    path = os.path.join(cache, SDIST_FILE)
    if not os.path.exists(path):
        url = find_sdist_url()
        log(f"downloading {SDIST_FILE}")
        with urllib.request.urlopen(url, timeout=300) as r, open(path + ".part", "wb") as f:
            f.write(r.read())
        os.replace(path + ".part", path)
    digest = sha256_file(path)
    if digest != SDIST_SHA256:
        os.remove(path)
        fail(f"{path}: sha256 {digest} does not match the pinned {SDIST_SHA256}")
    return path


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# Runs inside a detectron2 source tree: executes its setup.py with setuptools.setup wrapped.
SETUP_DRIVER = """
import runpy, sys, setuptools
DROPPED = {dropped!r}
_setup = setuptools.setup

def setup(**kw):
    kw["ext_modules"] = []
    kw.pop("cmdclass", None)
    data = dict(kw.get("package_data") or {{}})
    if not data.get("detectron2.model_zoo"):  # v0.6's sdist finds no configs to list
        data["detectron2.model_zoo"] = ["configs/**/*.yaml", "configs/**/*.py"]
    kw["package_data"] = data
    kw["install_requires"] = [
        r for r in kw.get("install_requires", [])
        if r.split("=")[0].split(">")[0].split("<")[0].split(";")[0].strip() not in DROPPED
    ]
    kw.pop("extras_require", None)  # holds a direct-URL requirement pip refuses
    return _setup(**kw)

setuptools.setup = setup
sys.argv = ["setup.py", "bdist_wheel", "-d", {outdir!r}]
runpy.run_path("setup.py", run_name="__main__")
"""


def build_python_only(src, outdir):
    """A wheel of the tree ``src`` without compiled ops (``ext_modules=[]``)."""
    driver = SETUP_DRIVER.format(dropped=DROPPED_REQUIREMENTS, outdir=os.path.abspath(outdir))
    r = subprocess.run(
        [sys.executable, "-c", driver], cwd=src, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if r.returncode:
        fail(f"building {src} Python-only failed:\n{r.stderr.decode()[-3000:]}")
    return newest_wheel(outdir)


def cuda_decision():
    """(build the CUDA ops?, why) by FORCE_CUDA / FPT_DETECTRON2_CUDA / torch and nvcc."""
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if os.environ.get("FORCE_CUDA") == "1":
        return True, "FORCE_CUDA=1"
    if os.environ.get("FPT_DETECTRON2_CUDA") == "0":
        return False, "FPT_DETECTRON2_CUDA=0"
    nvcc = CUDA_HOME and shutil.which(os.path.join(CUDA_HOME, "bin", "nvcc"))
    if torch.version.cuda and nvcc:
        return True, f"torch {torch.__version__} is a CUDA build and {nvcc} is there"
    if not torch.version.cuda:
        return False, f"torch {torch.__version__} is not a CUDA build"
    return False, "no nvcc found (set CUDA_HOME)"


def build_compiled(src, outdir, cuda, why):
    """A wheel of the tree ``src`` with its compiled ops: C++, and CUDA when ``cuda`` (``why``:
    the reason, from :func:`cuda_decision`)."""
    env = dict(os.environ)
    if cuda:
        env["FORCE_CUDA"] = "1"  # detectron2's setup.py otherwise needs a visible GPU
        log(f"compiling the C++ and CUDA ops ({why}; FPT_DETECTRON2_CUDA=0 for C++ only)")
    else:
        env.pop("FORCE_CUDA", None)
        log(f"compiling the C++ ops, without CUDA ops ({why})")
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["--disable-pip-version-check", "-w", outdir, src],
        env=env,
        capture_output=True,
        text=True,
    )
    if r.returncode:
        fail(
            f"compiling {src} failed (a compiler, torch's headers, nvcc for CUDA?):\n"
            + (r.stderr or r.stdout)[-4000:]
        )
    return newest_wheel(outdir)


def newest_wheel(outdir):
    wheels = [os.path.join(outdir, f) for f in os.listdir(outdir) if f.endswith(".whl")]
    return max(wheels, key=os.path.getmtime)  # the cache also holds the v0.6 wheel


def extract(archive, into):
    """Extract a source archive; return the folder holding setup.py."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            t.extractall(into, filter="data")
    else:
        fail(f"{archive}: not a source archive (.tar.gz, .tgz or .zip expected)")
    return source_root(into, archive)


def source_root(folder, named):
    for root in (folder, *(os.path.join(folder, d) for d in sorted(os.listdir(folder)))):
        if os.path.isfile(os.path.join(root, "setup.py")) and os.path.isdir(
            os.path.join(root, "detectron2")
        ):
            return root
    fail(f"{named}: no detectron2 source tree in it (setup.py and detectron2/ expected)")


def fetch_requirement(spec, into):
    """A pip requirement (``git+URL@REV``, a URL, ``name @ URL``) -> a source tree in ``into``."""
    if spec.startswith("git+"):
        url, _, rev = spec[len("git+") :].partition("@")
        dest = os.path.join(into, "detectron2-src")
        run(["git", "clone", "--quiet", url, dest], f"git clone {url}")
        if rev:
            run(["git", "-C", dest, "checkout", "--quiet", rev], f"git checkout {rev}")
        return dest
    downloads = os.path.join(into, "download")
    run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q"]
        + ["--no-build-isolation", "--disable-pip-version-check", "-d", downloads, spec],
        f"pip download {spec}",
    )
    (archive,) = [os.path.join(downloads, f) for f in os.listdir(downloads)]
    return extract(archive, os.path.join(into, "src"))


def run(cmd, what):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        fail(f"{what} failed:\n{(r.stderr or r.stdout)[-3000:]}")


def source_digest(spec):
    """What identifies the named source: a file's sha256, a tree's file list with sizes and
    modification times, or the requirement itself."""
    if os.path.isfile(spec):
        return sha256_file(spec)
    if os.path.isdir(spec):
        h = hashlib.sha256()
        for root, dirs, files in sorted(os.walk(spec)):
            dirs[:] = sorted(d for d in dirs if d not in (".git", "build", "__pycache__"))
            for f in sorted(files):
                st = os.stat(os.path.join(root, f))
                h.update(
                    f"{os.path.relpath(os.path.join(root, f), spec)}:{st.st_size}:{st.st_mtime_ns}\n".encode()
                )
        return h.hexdigest()
    return spec


def installed_record():
    try:
        with open(RECORD) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def install_wheel(wheel):
    """Install ``wheel`` in place of any detectron2 distribution already there."""
    subprocess.run(
        [sys.executable, "-m", "pip", "uninstall", "-y", "-q", *DISTRIBUTIONS],
        capture_output=True,
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q"]
        + ["--disable-pip-version-check", wheel],
        check=True,
    )


def checked_spec(spec):
    """``spec`` (absolute if a path), or one line if it names a path that is not there."""
    looks_like_a_path = "://" not in spec and (
        os.sep in spec or spec.endswith((".tar.gz", ".tgz", ".zip"))
    )
    if looks_like_a_path and not os.path.exists(spec):
        fail(
            f"FPT_DETECTRON2={spec}: no such file or folder (a detectron2 source tree, a source "
            "archive, or a pip requirement such as git+https://...@COMMIT)"
        )
    return os.path.abspath(spec) if os.path.exists(spec) else spec


def source_tree(spec, tmp):
    """A writable detectron2 source tree in ``tmp`` from a tree, an archive or a requirement."""
    if os.path.isdir(spec):
        src = os.path.join(tmp, "src")
        shutil.copytree(
            source_root(spec, spec),
            src,
            symlinks=True,
            ignore=shutil.ignore_patterns(".git", "build", "*.so", "__pycache__"),
        )
        return src
    if os.path.isfile(spec):
        return extract(spec, os.path.join(tmp, "src"))
    return fetch_requirement(spec, tmp)


def build_from_source(spec, python_only, force):
    import torch

    spec = checked_spec(spec)
    cuda = None if python_only else cuda_decision()  # (build the CUDA ops?, why)
    want = {
        "source": spec,
        "digest": source_digest(spec),
        "python_only": python_only,
        "cuda": None if python_only else cuda[0],
        "torch": torch.__version__,
    }
    have = installed_record()
    if not force and have == want and importlib.util.find_spec("detectron2") is not None:
        log(f"detectron2 from {spec} is installed already ({route_name(want)})")
        return
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        outdir = os.path.join(tmp, "wheel")
        os.makedirs(outdir)
        src = source_tree(spec, tmp)
        log(f"building detectron2 from {spec} ({route_name(want)})")
        wheel = (
            build_python_only(src, outdir) if python_only else build_compiled(src, outdir, *cuda)
        )
        install_wheel(wheel)
    with open(RECORD, "w") as f:
        json.dump(want, f, indent=1)
    log(f"installed {os.path.basename(wheel)} in {time.time() - start:.0f} s")
    report = subprocess.run(
        [
            sys.executable,
            "-c",
            "import detectron2, importlib.util as u; "
            "print(detectron2.__version__, 'with' if u.find_spec('detectron2._C') else 'without', "
            "'compiled ops at', detectron2.__path__[0])",
        ],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    log(f"detectron2 {report.stdout.strip() or report.stderr.strip()[-500:]}")


def route_name(want):
    if want["python_only"]:
        return "Python-only"
    return "compiled: C++ and CUDA ops" if want["cuda"] else "compiled: C++ ops"


def default_wheel(cache, force=False):
    """Our Python-only v0.6 wheel: from the cache, else built from the registry sdist."""
    wheels = [f for f in os.listdir(cache) if f.startswith(WHEEL_GLOB) and f.endswith(".whl")]
    if wheels and not force:
        return os.path.join(cache, wheels[0])
    with tempfile.TemporaryDirectory() as tmp:
        src = extract(fetch_sdist(cache), tmp)
        log("building the Python-only wheel (ext_modules=[])")
        return build_python_only(src, cache)


def wheel_into(out, spec, cache):
    """Write the wheel of the route (Python-only: it serves any interpreter) into ``out``."""
    os.makedirs(out, exist_ok=True)
    if spec is None:
        wheel = default_wheel(cache)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            spec = checked_spec(spec)
            log(f"building detectron2 from {spec} (Python-only, for a wheelhouse)")
            wheel = build_python_only(source_tree(spec, tmp), tmp)
            shutil.copy(wheel, out)
    dest = os.path.join(out, os.path.basename(wheel))
    if not os.path.exists(dest):
        shutil.copy(wheel, dest)
    print(dest)


def from_wheelhouse(folder):
    """The detectron2 wheel of a wheelhouse (tools/make_wheelhouse.sh puts one there)."""
    names = tuple(d.replace("-", "_") + "-" for d in DISTRIBUTIONS)
    found = sorted(f for f in os.listdir(folder) if f.startswith(names) and f.endswith(".whl"))
    if not found:
        fail(
            f"--wheelhouse {folder}: no detectron2 wheel in it (tools/make_wheelhouse.sh writes one)"
        )
    return os.path.join(folder, found[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild and reinstall")
    ap.add_argument("--cache", default=os.path.join(os.path.dirname(__file__), "..", ".cache"))
    ap.add_argument(
        "--source",
        default=os.environ.get("FPT_DETECTRON2") or None,
        help="a detectron2 source tree, source archive or pip requirement (FPT_DETECTRON2)",
    )
    ap.add_argument(
        "--python-only",
        action="store_true",
        default=os.environ.get("FPT_DETECTRON2_PYONLY") == "1",
        help="with --source: build without compiled ops (FPT_DETECTRON2_PYONLY=1)",
    )
    ap.add_argument(
        "--wheel-into",
        metavar="DIR",
        help="write the route's wheel (Python-only) into DIR and print its path; install nothing",
    )
    ap.add_argument(
        "--wheelhouse",
        metavar="DIR",
        help="no detectron2 importable: install the wheel found in DIR (offline)",
    )
    args = ap.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    if args.wheel_into:
        return wheel_into(args.wheel_into, args.source, args.cache)
    if args.source and not args.wheelhouse:
        return build_from_source(args.source, args.python_only, args.force)

    if not args.force and importlib.util.find_spec("detectron2") is not None:
        import detectron2

        has_c = importlib.util.find_spec("detectron2._C") is not None
        log(
            f"using the installed detectron2 {detectron2.__version__} "
            f"({'with' if has_c else 'without'} compiled ops) at {os.path.dirname(detectron2.__file__)}"
        )
        return
    if args.wheelhouse:
        wheel = from_wheelhouse(args.wheelhouse)
    else:
        wheel = default_wheel(args.cache, force=args.force)
    install_wheel(wheel)
    if os.path.exists(RECORD):
        os.remove(RECORD)
    log(f"installed {os.path.basename(wheel)}")


if __name__ == "__main__":
    main()
