"""The docs are a contract: every ```python and ```bash block of README.md and docs/*.md runs.

One test per block, named ``file:line``. Stand-ins for weights, tensors and files are declared
next to each block (``<!-- docs-test: ... -->``, see ``docs_blocks.py``) and defined once in
``docs_fixtures.py``. Python blocks run in this process, bash blocks in ``bash -e`` with the
virtual environment's ``bin`` first on ``PATH``; both in a fresh temporary folder, offline, with
a timeout. A block that cannot run here (the network, a GPU) is skipped with its reason, and
the doc must say so visibly next to it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import docs_fixtures
from docs_blocks import ROOT, DocBlock, collect_blocks, doc_files, visible_note_near
from processes import run_group

BLOCKS = [block for path in doc_files() for block in collect_blocks(path)]
DEFAULT_TIMEOUT_S = 120
VENV_BIN = Path(sys.executable).parent
#: fixture -> (file in the block's folder, stand-in it links to; list its weights too)
LOCAL_FILES = {
    "vgg16_pth": ("vgg16.pth", "vgg16-397923af.pth"),
    "radimagenet_pth": ("RadImageNet-ResNet50_notop.pth", "RadImageNet-ResNet50_notop.pth"),
}


@pytest.fixture(scope="session")
def standin_folder(tmp_path_factory):
    """One folder of weight stand-ins for the whole session (written on first use)."""
    return tmp_path_factory.mktemp("docs_weights")


def _params():
    for block in BLOCKS:
        marks = [pytest.mark.timeout(int(block.options.get("timeout", DEFAULT_TIMEOUT_S)) + 30)]
        if block.skip is not None:
            marks.append(pytest.mark.skip(reason=f"not run here: {block.skip}"))
        yield pytest.param(block, marks=marks, id=block.id)


@pytest.mark.parametrize("block", list(_params()))
def test_documented_block_runs(block: DocBlock, tmp_path, monkeypatch, standin_folder):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")  # a stand-in missing is an error
    monkeypatch.setenv("PERCEPTUAL_LOSS_WEIGHTS_DIR", str(standin_folder))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / ".torch"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / ".keras"))
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "torch"))
    monkeypatch.delenv("PERCEPTUAL_LOSS_MIRROR", raising=False)
    digests = dict(filter(None, (docs_fixtures.write_weight_standin(name, standin_folder)
                                 for name in block.weights)))
    docs_fixtures.accept_standins(monkeypatch, digests)
    docs_fixtures.write_image_files(tmp_path)
    if "examples" in block.fixtures:  # commands that run the repository's examples/
        (tmp_path / "examples").symlink_to(ROOT / "examples")
    for name, (link, standin) in LOCAL_FILES.items():  # local weight files named by path
        if name in block.fixtures:
            (tmp_path / link).symlink_to(standin_folder / standin)
    code = block.runnable_code()
    if block.language == "python":
        _run_python(block, code)
    else:
        _run_bash(block, code, tmp_path, digests)


def _run_python(block: DocBlock, code: str) -> None:
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for name in block.fixtures:
        if name in docs_fixtures.NAMESPACES:
            namespace.update(docs_fixtures.NAMESPACES[name]())
        elif name not in {"image_files", "examples"} and name not in LOCAL_FILES:
            raise AssertionError(f"{block.id}: unknown fixture {name!r}")
    exec(compile(code, block.id, "exec"), namespace)  # noqa: S102 - the documented example


def _run_bash(block: DocBlock, code: str, folder: Path, digests: dict[str, str]) -> None:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(docs_fixtures.SITE_DIR), env.get("PYTHONPATH", "")])
    env["PERCEPTUAL_DOCS_TEST_HASHES"] = json.dumps(digests)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("PERCEPTUAL_DEBUG", None)
    timeout = int(block.options.get("timeout", DEFAULT_TIMEOUT_S))
    done = run_group(["bash", "-e", "-o", "pipefail", "-c", code], timeout=timeout, env=env,
                     cwd=folder)
    assert done.returncode == 0, (f"{block.id} exited with {done.returncode}\n"
                                  f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}")


def test_every_doc_has_its_blocks_collected():
    # the collector sees the files and the blocks: a broken fence parser would skip them all
    assert any(block.path.name == "README.md" for block in BLOCKS)
    assert len({block.path for block in BLOCKS}) >= 5
    assert all(block.code.strip() for block in BLOCKS)


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in BLOCKS if b.skip])
def test_a_block_not_run_says_so_in_the_doc(block: DocBlock):
    assert visible_note_near(block.path, block.line), (
        f"{block.id} is skipped ({block.skip}) but the doc does not say so next to it: add "
        "a line '*Not run in the test suite: ...*'")
