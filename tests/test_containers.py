"""docker/Dockerfile, checked without a container runtime (none exists on these machines):
every COPY source exists and is not excluded from the build context, every install step uses
the pinned constraints, the image runs as a non-root user, its last stage installs nothing and
compiles nothing, its command names files that exist, and its Python satisfies the project's
``requires-python``."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib

import pytest
from packaging.specifiers import SpecifierSet

BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "cmake", "clang")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(steps: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for step in steps:
        if step[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(step)
    return found


def ignored(path: str, patterns: list[str]) -> bool:
    path = path.rstrip("/")
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, f"**/{p}") or path.startswith(p.rstrip("/") + "/")
               for p in patterns)


@pytest.fixture(scope="module")
def dockerfile(repo_root):
    text = (repo_root / "docker" / "Dockerfile").read_text()
    steps = instructions(text)
    args = {m.group(1): m.group(2) for k, v in steps if k == "ARG" for m in [re.match(r"(\w+)=(\S+)", v)] if m}
    return steps, stages(steps), args


def test_every_copy_source_exists_in_the_build_context(dockerfile, repo_root):
    steps, _, _ = dockerfile
    patterns = [ln.strip() for ln in (repo_root / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    copies = [shlex.split(v) for k, v in steps if k == "COPY" and not v.startswith("--from")]
    assert len(copies) >= 5
    for words in copies:
        for src in words[:-1]:
            assert (repo_root / src).exists(), f"COPY {src}: no such file in the repository"
            assert not ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"
    # The committed market data goes in: the image trains and serves with nothing mounted.
    assert any(w[0] == "datasets/" for w in copies) and not ignored("datasets/crude-datasets/msft.csv", patterns)
    assert ignored(".venv", patterns) and ignored("models", patterns) and ignored("datasets/cache", patterns)


def test_installs_use_the_pinned_constraints_and_the_last_stage_installs_nothing(dockerfile):
    _, parts, _ = dockerfile
    assert len(parts) >= 2, "multi-stage: a build stage and a runtime stage"
    build, runtime = parts[0], parts[-1]
    installs = [v for k, v in build if k == "RUN" for cmd in v.split("&&") if "pip install" in cmd and "venv" not in cmd]
    pip_cmds = [cmd for k, v in build if k == "RUN" for cmd in v.split("&&") if "pip install" in cmd]
    assert installs and pip_cmds and all("-c constraints.txt" in c for c in pip_cmds), pip_cmds
    copied_before = [v for k, v in build[: [s[1] for s in build].index(installs[0])] if k == "COPY"]
    assert any("constraints.txt" in v for v in copied_before)
    assert "torch==2.13.0" in " ".join(pip_cmds)  # the pin every install step of the project uses
    for k, v in runtime:
        assert not (k == "RUN" and "pip install" in v), f"the runtime stage installs: {v}"
        assert not (k == "RUN" and "apt-get install" in v and any(t in v.split() for t in BUILD_TOOLS)), v
    assert any(k == "COPY" and v.startswith("--from=build /opt/venv") for k, v in runtime)


def test_the_image_runs_as_a_non_root_user(dockerfile):
    _, parts, _ = dockerfile
    users = [v for k, v in parts[-1] if k == "USER"]
    assert users and users[-1] not in ("root", "0"), users


def test_the_command_names_files_that_exist(dockerfile, repo_root):
    _, parts, _ = dockerfile
    (cmd,) = [v for k, v in parts[-1] if k == "CMD"]
    words = json.loads(cmd)
    assert words[0] == "python" and (repo_root / words[1]).is_file()
    for i, w in enumerate(words):
        if w == "--space":
            assert (repo_root / words[i + 1]).is_file()
    workdir = [v for k, v in parts[-1] if k == "WORKDIR"][-1]
    env = " ".join(v for k, v in parts[-1] if k == "ENV")
    assert f"PYTHONPATH={workdir}/src" in env  # the package's code finds datasets/ and serve/ beside it


def test_the_image_python_satisfies_requires_python(dockerfile, repo_root):
    _, parts, args = dockerfile
    version = args["PYTHON_VERSION"]
    assert all(v.startswith("python:${PYTHON_VERSION}-slim") for k, v in (p[0] for p in parts))
    need = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(need).contains(f"{version}.0"), (version, need)
