#!/usr/bin/env python
"""Build and install a Python-only detectron2 v0.6 wheel from the registry sdist.

detectron2 is not published on PyPI as a wheel. Its v0.6 Python sources are, as the sdist
``pb1-detectron2==0.6`` (without the C++/CUDA sources of ``detectron2._C``). This script:

1. does nothing when an importable detectron2 is already installed (for example one built
   from source with its CUDA ops on a GPU cluster): that one is used untouched;
2. otherwise downloads the sdist from the configured package index (sha256-pinned),
3. runs its own ``setup.py`` unchanged, with ``setuptools.setup`` wrapped from outside so that
   ``ext_modules=[]`` (no compiled ``_C``; :mod:`fpt.compat` supplies fallbacks), the
   ``detectron2/model_zoo/configs`` package data is included (its setup.py misses it) and the
   stale ``black==21.4b2`` pin is dropped,
4. installs the wheel with ``--no-deps`` (dependencies come pinned from requirements/).

Usage: python tools/build_detectron2.py [--force] [--cache DIR]
"""

import argparse
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_FILE = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
WHEEL_GLOB = "pb1_detectron2-0.6-"
# requirements of detectron2's setup.py that we drop: a 2021 beta of black pinned exactly
# (we pin a current black in requirements/), and caffe2-only packages.
DROPPED_REQUIREMENTS = ("black", "future", "pydot")


def log(msg):
    print(f"[build_detectron2] {msg}", flush=True)


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
    raise SystemExit(f"[build_detectron2] {SDIST_FILE} not found on the package index {page}")


def fetch_sdist(cache):
    path = os.path.join(cache, SDIST_FILE)
    if not os.path.exists(path):
        url = find_sdist_url()
        log(f"downloading {SDIST_FILE}")
        with urllib.request.urlopen(url, timeout=300) as r, open(path + ".part", "wb") as f:
            f.write(r.read())
        os.replace(path + ".part", path)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    if digest != SDIST_SHA256:
        os.remove(path)
        raise SystemExit(
            f"[build_detectron2] {path}: sha256 {digest} does not match the pinned {SDIST_SHA256}"
        )
    return path


# Runs inside the extracted sdist: executes its setup.py with setuptools.setup wrapped.
SETUP_DRIVER = """
import runpy, sys, setuptools
DROPPED = {dropped!r}
_setup = setuptools.setup

def setup(**kw):
    kw["ext_modules"] = []
    kw.pop("cmdclass", None)
    data = dict(kw.get("package_data") or {{}})
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


def build_wheel(sdist, outdir):
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = os.path.join(tmp, f"{SDIST_NAME}-{SDIST_VERSION}")
        driver = SETUP_DRIVER.format(dropped=DROPPED_REQUIREMENTS, outdir=os.path.abspath(outdir))
        log("building the Python-only wheel (ext_modules=[])")
        subprocess.run(
            [sys.executable, "-c", driver],
            cwd=src,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    wheels = [f for f in os.listdir(outdir) if f.startswith(WHEEL_GLOB) and f.endswith(".whl")]
    return os.path.join(outdir, wheels[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild and reinstall")
    ap.add_argument("--cache", default=os.path.join(os.path.dirname(__file__), "..", ".cache"))
    args = ap.parse_args()

    if not args.force and importlib.util.find_spec("detectron2") is not None:
        import detectron2

        has_c = importlib.util.find_spec("detectron2._C") is not None
        log(
            f"using the installed detectron2 {detectron2.__version__} "
            f"({'with' if has_c else 'without'} compiled ops) at {os.path.dirname(detectron2.__file__)}"
        )
        return
    os.makedirs(args.cache, exist_ok=True)
    wheels = [f for f in os.listdir(args.cache) if f.startswith(WHEEL_GLOB) and f.endswith(".whl")]
    if args.force or not wheels:
        wheel = build_wheel(fetch_sdist(args.cache), args.cache)
    else:
        wheel = os.path.join(args.cache, wheels[0])
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q", wheel],
        check=True,
    )
    log(f"installed {os.path.basename(wheel)}")


if __name__ == "__main__":
    main()
