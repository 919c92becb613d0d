"""tools/build_detectron2.py: finding a source tree in what FPT_DETECTRON2 names, the CUDA
decision, and the Python-only wheel of a source tree (on a small stand-in tree; nothing is
installed here — CI's second run installs detectron2 main through this script)."""

import os
import tarfile
import zipfile

import pytest

from support import load_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
build = load_module("build_detectron2", os.path.join(REPO, "tools", "build_detectron2.py"))

SETUP_PY = """
from setuptools import setup, Extension
setup(
    name="detectron2",
    version="0.6",
    packages=["detectron2", "detectron2.model_zoo"],
    package_data={"detectron2.model_zoo": []},
    ext_modules=[Extension("detectron2._C", ["detectron2/csrc/vision.cpp"])],
    install_requires=["black==21.4b2", "numpy"],
)
"""


def _source_tree(root):
    """A detectron2-shaped tree: setup.py with a compiled extension, a model-zoo config."""
    top = root / "detectron2-abc123"
    for folder in ("detectron2/model_zoo/configs/COCO", "detectron2/csrc"):
        (top / folder).mkdir(parents=True)
    (top / "setup.py").write_text(SETUP_PY)
    (top / "detectron2" / "__init__.py").write_text("__version__ = '0.6'\n")
    (top / "detectron2" / "model_zoo" / "__init__.py").write_text("")
    (top / "detectron2" / "model_zoo" / "configs" / "COCO" / "a.yaml").write_text("x: 1\n")
    (top / "detectron2" / "csrc" / "vision.cpp").write_text("#error not to be compiled\n")
    return top


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_an_archive_gives_the_tree_inside(tmp_path, kind):
    top = _source_tree(tmp_path / "src")
    archive = tmp_path / f"d2.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            for path in top.rglob("*"):
                z.write(path, path.relative_to(top.parent))
    else:
        with tarfile.open(archive, "w:gz") as t:
            t.add(top, arcname=top.name)
    root = build.extract(str(archive), str(tmp_path / "out"))
    assert os.path.basename(root) == top.name and os.path.isfile(os.path.join(root, "setup.py"))


def test_not_a_detectron2_source_is_one_line(tmp_path):
    archive = tmp_path / "other.tar.gz"
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "setup.py").write_text("")
    with tarfile.open(archive, "w:gz") as t:
        t.add(tmp_path / "x", arcname="x")
    with pytest.raises(SystemExit, match=r"other\.tar\.gz: no detectron2 source tree in it"):
        build.extract(str(archive), str(tmp_path / "out"))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(SystemExit, match=r"notes\.txt: not a source archive"):
        build.extract(str(text), str(tmp_path / "out2"))


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"FORCE_CUDA": "1", "FPT_DETECTRON2_CUDA": "0"}, True),
        ({"FPT_DETECTRON2_CUDA": "0"}, False),
    ],
)
def test_cuda_decision_knobs(monkeypatch, env, expected):
    monkeypatch.delenv("FORCE_CUDA", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cuda, why = build.cuda_decision()
    assert cuda is expected and why.split("=")[0] in env


def test_python_only_wheel_of_a_source_tree(tmp_path):
    """The compiled extension is dropped, the model-zoo configs are packaged, the exact black
    pin is gone."""
    top = _source_tree(tmp_path / "src")
    wheel = build.build_python_only(str(top), str(tmp_path / "wheels"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read([n for n in names if n.endswith("METADATA")][0]).decode()
    assert wheel.endswith("-py3-none-any.whl")  # no compiled module
    assert "detectron2/model_zoo/configs/COCO/a.yaml" in names
    assert not [n for n in names if n.endswith((".so", ".cpp"))]
    assert "Requires-Dist: numpy" in metadata and "black" not in metadata


def test_a_missing_source_path_is_one_line(tmp_path):
    missing = str(tmp_path / "detectron2-main.tar.gz")
    with pytest.raises(
        SystemExit, match=r"FPT_DETECTRON2=.*detectron2-main\.tar\.gz: no such file"
    ):
        build.build_from_source(missing, python_only=True, force=False)


def test_wheelhouse_gets_the_cached_wheel_and_install_finds_it(tmp_path, capsys):
    """--wheel-into copies the route's wheel (the cached v0.6 one) into a wheelhouse and prints
    its path; --wheelhouse finds it there; a wheelhouse without one is one line."""
    cache, house = tmp_path / "cache", tmp_path / "house"
    cache.mkdir()
    (cache / "pb1_detectron2-0.6-py3-none-any.whl").write_bytes(b"wheel")
    build.wheel_into(str(house), None, str(cache))
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == str(house / "pb1_detectron2-0.6-py3-none-any.whl")
    assert (house / "pb1_detectron2-0.6-py3-none-any.whl").read_bytes() == b"wheel"
    (house / "fvcore-0.1.5-py3-none-any.whl").write_bytes(b"other")
    assert build.from_wheelhouse(str(house)) == printed
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"--wheelhouse .*: no detectron2 wheel in it"):
        build.from_wheelhouse(str(tmp_path / "empty"))


def test_wheelhouse_wheel_of_a_named_source_is_python_only(tmp_path, capsys):
    top = _source_tree(tmp_path / "src")
    build.wheel_into(str(tmp_path / "house"), str(top), str(tmp_path / "cache"))
    wheel = capsys.readouterr().out.strip().splitlines()[-1]
    assert os.path.basename(wheel).startswith("detectron2-0.6-") and wheel.endswith("-none-any.whl")
