"""Offline set-up (issue 21): tools/make_wheelhouse.sh for this machine's Python, then
``tools/setup.sh --wheelhouse DIR --into-current-env`` into a fresh environment that already
holds torch and a GPU node's usual packages, with no package index reachable; fpt imports there
and passes a smoke subset of this suite. Plus the planning rules on their own (no network).

The "node" is a new venv whose torch, torchvision, numpy, ... are this suite's own, made visible
through a site folder of links (as a GPU image's preinstalled packages): nothing of fpt's own
requirements is in it, so everything else must come from the wheelhouse."""

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from importlib import metadata

import pytest

from support import load_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
wheelhouse = load_module("fpt_wheelhouse", os.path.join(REPO, "tools", "wheelhouse.py"))
Requirement = wheelhouse.Requirement
canon = wheelhouse.canonicalize_name

# what today's GPU image has of ours (tools/have/cuda-image.txt), with their dependencies
NODE_PACKAGES = [
    "torch", "torchvision", "numpy", "scipy", "opencv-python-headless", "pillow", "matplotlib",
    "pyyaml", "tqdm", "tensorboard", "onnx", "onnxruntime", "timm", "pytest", "scikit-image",
    "tabulate", "cloudpickle", "psutil", "setuptools", "portalocker", "click", "pathspec",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the rules, without network
# ---------------------------------------------------------------------------------------------
def test_plan_keeps_in_range_and_needs_missing_or_out_of_range():
    reqs = [Requirement("numpy>=1.24"), Requirement("fvcore<0.1.6,>=0.1.5"), Requirement("black")]
    have = {"numpy": "1.20.0", "black": None, "torch": "2.11.0+cu130"}
    kept, needed = wheelhouse.plan(reqs, have)
    assert [(str(r), v) for r, v in kept] == [("black", None)]
    assert [(r.name, v) for r, v in needed] == [("numpy", "1.20.0"), ("fvcore", None)]
    have["numpy"] = "2.5.2"
    kept, needed = wheelhouse.plan(reqs, have)
    assert {r.name for r, _ in kept} == {"numpy", "black"}


def test_freeze_lines(tmp_path):
    freeze = tmp_path / "freeze.txt"
    freeze.write_text(
        "# comment\nTorch==2.11.0+cu130\nhuggingface_hub==1.33.0\n"
        "mypkg @ file:///src/mypkg\n-e git+https://x/y.git#egg=y\nscipy\n"
    )
    have = wheelhouse.read_freeze(str(freeze))
    assert have == {
        "torch": "2.11.0+cu130",
        "huggingface-hub": "1.33.0",
        "mypkg": None,
        "scipy": None,
    }
    freeze.write_text("numpy==2.5\nthis is not a requirement\n")
    with pytest.raises(SystemExit, match=r"freeze.txt:2: 'this is not a requirement'"):
        wheelhouse.read_freeze(str(freeze))


def test_target_torch_is_never_ours_to_install():
    with pytest.raises(SystemExit, match="has no torch"):
        wheelhouse.check_torch({"torchvision": "0.26.0"}, "the target")
    with pytest.raises(SystemExit, match="has torch 2.4.1; fpt needs torch >= 2.11"):
        wheelhouse.check_torch({"torch": "2.4.1", "torchvision": "0.19.1"}, "the target")
    wheelhouse.check_torch({"torch": "2.11.0+cu130", "torchvision": "0.26.0"}, "the target")


def test_markers_are_the_targets():
    target = wheelhouse.Target("3.9", ["manylinux_2_28_aarch64"])
    assert target.evaluate(Requirement("x; python_version < '3.10'").marker)
    assert not target.evaluate(Requirement("x; platform_machine == 'x86_64'").marker)
    assert "--python-version" in target.pip_options() and "cp39" in target.pip_options()
    assert target.wheel_fits("a-1-py3-none-any.whl") and not target.wheel_fits(
        "a-1-cp39-cp39-linux_x86_64.whl"
    )


def test_setup_options_refuse_in_one_line(tmp_path):
    r = subprocess.run(
        ["bash", "tools/setup.sh", "--wheelhouse", str(tmp_path / "none")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "--wheelhouse" in r.stderr and "no such folder" in r.stderr


# ---------------------------------------------------------------------------------------------
# the whole path: make (online), install offline into a node, smoke tests there
# ---------------------------------------------------------------------------------------------
def _closure(names):
    """The installed distributions ``names`` need, themselves included."""
    seen, todo = {}, [Requirement(n) for n in names]
    while todo:
        req = todo.pop()
        name = canon(req.name)
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for line in dist.requires or []:
            dep = Requirement(line)
            if dep.marker is None or dep.marker.evaluate({"extra": ""}):
                todo.append(dep)
    return seen


def _node(root):
    """A fresh venv with NODE_PACKAGES (and what they need) preinstalled, as links."""
    site = root / "preinstalled"
    site.mkdir()
    for dist in _closure(NODE_PACKAGES).values():
        for f in dist.files or []:
            top = f.parts[0]
            if top.endswith(".pth") or top == ".." or (site / top).exists():
                continue
            src = dist.locate_file(top)
            if os.path.exists(src):
                os.symlink(src, site / top)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(root / "venv")], check=True)
    py = root / "venv" / "bin" / "python"
    purelib = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with open(os.path.join(purelib, "zz_preinstalled.pth"), "w") as f:
        f.write(f"import site; site.addsitedir({str(site)!r})\n")
    return py


def _index_reachable():
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/") + "/termcolor/"
    try:
        urllib.request.urlopen(url, timeout=15).close()
        return True
    except OSError:
        return False


def _offline_env():
    """No package index reachable: pip's configuration dropped, its index and every proxy a
    closed local port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    closed = "http://127.0.0.1:9"
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_INDEX_URL=closed + "/simple",
        PIP_RETRIES="0",
        PIP_TIMEOUT="5",
        http_proxy=closed,
        https_proxy=closed,
        HTTP_PROXY=closed,
        HTTPS_PROXY=closed,
    )
    return env


@pytest.mark.slow
@pytest.mark.ci_once
def test_wheelhouse_installs_into_an_offline_node(tmp_path):
    if not _index_reachable():
        pytest.skip("no package index reachable here to make the wheelhouse from")
    py = _node(tmp_path)
    freeze = tmp_path / "freeze.txt"
    with open(freeze, "w") as f:
        subprocess.run([py, "-m", "pip", "freeze"], stdout=f, check=True)
    before = wheelhouse.read_freeze(str(freeze))
    assert before["torch"] and "fvcore" not in before and "detectron2" not in str(before)

    house = tmp_path / "wheelhouse"
    r = subprocess.run(
        ["bash", "tools/make_wheelhouse.sh", str(house), "--have", str(freeze)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = sorted(f for f in os.listdir(house) if f.endswith(".whl"))
    names = {canon(w.split("-")[0]) for w in wheels}
    # what the node has is left out; what it lacks is there, dependencies and detectron2 too
    assert not names & set(before), names & set(before)
    assert {"fvcore", "iopath", "omegaconf", "hydra-core", "pycocotools", "pb1-detectron2"} <= names
    assert "antlr4-python3-runtime" in names  # hydra-core's, an sdist on the index
    manifest = json.loads((house / "fpt-wheelhouse.json").read_text())
    assert manifest["bytes"] == sum(os.path.getsize(house / w) for w in wheels)

    env = _offline_env()

    def setup_offline():
        return subprocess.run(
            ["bash", "tools/setup.sh", "--wheelhouse", str(house), "--into-current-env"]
            + ["--python", str(py)],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=env,
        )

    r = setup_offline()
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "[setup] ready: fpt" in out
    assert re.search(r"kept .*numpy " + re.escape(before["numpy"]), out), out
    installed = re.search(r"\[wheelhouse\] installed \d+: (.*)", out).group(1)
    assert "fvcore" in installed and "torch" not in installed.split(", ")[0]

    after = subprocess.run(
        [py, "-m", "pip", "freeze"], capture_output=True, text=True, check=True, env=env
    ).stdout
    after = {canon(l.split("==")[0]): l.split("==")[-1] for l in after.splitlines() if "==" in l}
    for name in ("torch", "torchvision", "numpy", "pillow"):
        assert after[name] == before[name], name  # the node's own, untouched

    probe = (
        "import fpt, detectron2, torch; from fpt.compat import c_ops; "
        "print(fpt.__file__, detectron2.__version__, torch.__file__)"
    )
    r = subprocess.run([py, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    fpt_file, d2_version, torch_file = r.stdout.split()
    assert fpt_file.startswith(REPO) and d2_version == "0.6"
    assert str(tmp_path / "preinstalled") in torch_file

    r = subprocess.run(
        [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_compat.py"]
        + ["-k", "not model_zoo_lazyconfig and not pkg_resources"],  # the slowest two: 15 s
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert re.search(r"\d+ passed", r.stdout)

    # a second run offline installs nothing
    r = setup_offline()
    assert r.returncode == 0 and "[wheelhouse] nothing to install" in r.stdout, r.stdout + r.stderr
