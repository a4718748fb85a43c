"""A new user's first minutes: the README's two commands, what they install, CI running the same, real URLs."""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import pytest
from conftest import ROOT

README = (ROOT / "README.md").read_text()
DEFAULT_ENV: dict[str, str] = {}


def load_dev():
    spec = importlib.util.spec_from_file_location("dev_script", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dev = load_dev()


def first_code_block(markdown: str) -> list[str]:
    block = re.search(r"```[a-z]*\n(.*?)```", markdown, re.S)
    assert block, "the README has no code block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_the_two_commands():
    assert first_code_block(README) == ["python3 dev.py demo", "python3 dev.py test"]
    assert README.index("python3 dev.py demo") < README.index("## Install")


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    lines = [line for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[-1] == "exec python3 dev.py test"
    assert not re.search(r"\b(pip|pytest|venv)\b", "\n".join(lines))  # all set-up lives in dev.py, as for a user


def commands(steps) -> list[list[str]]:
    return [cmd for cmd, _ in steps]


def test_a_fresh_machine_gets_venv_cpu_torch_and_requirements():
    steps = commands(dev.plan("demo", [], DEFAULT_ENV, None))
    py = str(dev.venv_python())
    assert steps == [
        [sys.executable, "-m", "venv", str(dev.VENV)],
        [py, "-m", "pip", "install", "torch==2.13.0"],  # pinned: a bare `torch` pulls a multi-GB CUDA build
        [py, "-m", "pip", "install", "-r", "requirements.txt"],
        [py, "-m", "lua_core", "demo"],
    ]
    steps = commands(dev.plan("test", ["-x"], DEFAULT_ENV, None))
    assert steps[2] == [py, "-m", "pip", "install", "-r", "requirements.txt", "-r", "requirements-dev.txt"]
    assert steps[3:] == [[py, "-m", "ruff", "check", "."], [py, "-m", "pytest", "-q", "tests", "-x"]]


def test_a_reused_venv_installs_only_what_changed():
    installed = {}
    for _cmd, installs in dev.plan("test", [], DEFAULT_ENV, None):
        installed.update(installs)
    py = str(dev.venv_python())
    assert commands(dev.plan("test", [], DEFAULT_ENV, installed))[0] == [py, "-m", "ruff", "check", "."]
    assert commands(dev.plan("demo", [], DEFAULT_ENV, installed)) == [[py, "-m", "lua_core", "demo"]]
    changed = {**installed, "requirements-dev.txt": "an older file"}
    assert commands(dev.plan("test", [], DEFAULT_ENV, changed))[0] == [
        py, "-m", "pip", "install", "-r", "requirements-dev.txt"
    ]


def test_cuda_users_choose_their_torch():
    env = {"LUA_TORCH_INDEX_URL": "https://download.pytorch.org/whl/cu128", "LUA_TORCH_SPEC": "torch==2.13.0"}
    installed = {}
    for _cmd, installs in dev.plan("demo", [], DEFAULT_ENV, None):
        installed.update(installs)
    steps = commands(dev.plan("demo", [], env, installed))  # a new choice reinstalls torch, nothing else
    py = str(dev.venv_python())
    assert steps == [
        [py, "-m", "pip", "install", "torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cu128"],
        [py, "-m", "lua_core", "demo"],
    ]


def test_dev_script_explains_itself_on_a_wrong_target(capsys):
    assert dev.main(["demos"]) == 2
    assert "python3 dev.py demo" in capsys.readouterr().err


def test_stamp_records_only_succeeded_installs(tmp_path, monkeypatch):
    """A failed install is retried next time: only steps that exited 0 are written to the stamp."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    monkeypatch.setattr(dev, "VENV", venv)
    monkeypatch.setattr(dev, "STAMP", venv / "stamp.json")
    monkeypatch.setattr(dev, "venv_python", lambda venv=venv: venv / "bin" / "python")
    calls = []

    def fake_call(cmd):
        calls.append(cmd)
        return 1 if "-r" in cmd else 0  # torch installs, the requirements fail

    monkeypatch.setattr(dev.subprocess, "call", fake_call)
    monkeypatch.chdir(tmp_path)
    assert dev.main(["demo"]) == 1
    assert set(json.loads((venv / "stamp.json").read_text())) == {"torch"}
    calls.clear()
    monkeypatch.setattr(dev.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert dev.main(["demo"]) == 0
    assert [c[3:] for c in calls] == [["install", "-r", "requirements.txt"], ["demo"]]


# --------------------------------------------------------------------------- no invented URLs or files

# Addresses known to exist: the paper, the authors' code and weights, TAESD, PyTorch's wheel index.
REAL_URL_PREFIXES = (
    "https://arxiv.org/abs/2511.10629",
    "https://github.com/vaskers5/LUA",
    "https://huggingface.co/vaskers5/LUA-FLUX",
    "https://github.com/madebyollin/taesd",
    "https://download.pytorch.org/whl/",
    "https://github.com/comfyanonymous/ComfyUI",
    "https://github.com/Comfy-Org/",
)


@pytest.mark.parametrize("name", ["README.md", "pyproject.toml", "DEVELOPERS.md", "lua_core/assets/README.md"])
def test_every_url_is_a_known_real_address(name):
    text = (ROOT / name).read_text()
    urls = re.findall(r"https?://[^\s)\"'`>\]]+", text)
    unknown = [u for u in urls if not u.startswith(REAL_URL_PREFIXES)]
    assert not unknown, f"{name}: URLs that are not known to exist: {unknown}"


def test_registry_metadata_names_only_files_that_exist():
    import tomllib

    comfy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["comfy"]
    icon = comfy.get("Icon")
    if icon:  # an icon must be a file in this repository, served from it
        assert (ROOT / icon.split("/main/", 1)[-1]).is_file(), icon
    for folder in comfy.get("includes", []):
        assert (ROOT / folder).exists(), folder


def test_readme_links_to_files_that_exist():
    for target in re.findall(r"\]\(([^)#]+?)(?:#[^)]*)?\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to missing {target}"
