"""The package's shape: imports point downward, operator commands stay off the main loop, and only
`daemon/store.py` names SQL functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import psycopg

PACKAGE = Path(__file__).resolve().parent.parent / "daemon"

# Bottom first. A module may import only from layers below its own (lazily or not); a package's modules (daemon/domain/)
# share its layer and may import each other.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"domain", "backoff", "crypto", "logs"}),  # shared types and rules (domain: a package), no daemon imports
    frozenset({"config", "store", "calendar", "metrics", "feed", "vapi_tools", "vapi_api"}),  # one outside system each
    frozenset({"tokens", "writeback", "budget", "migrations", "vapi_setup"}),  # vapi_setup: Vapi kept in step
    frozenset({"sync", "mirror", "channels", "wiring"}),  # the loops, and the parts built from settings
    frozenset({"public", "google_connect"}),  # the public listener; connecting Google (CLI and web)
    frozenset({"connect_web"}),  # the clinic pages on the public listener
    frozenset({"app", "admin", "verify"}),  # the main loop and the operator actions
    frozenset({"cli"}),  # the command line
    frozenset({"__main__"}),
)
MAIN_LOOP = {"daemon.app", "daemon.sync", "daemon.mirror"}


def top(module: str) -> str:
    """The layered module a module is or belongs to: "store" -> "store", "domain.clinics" -> "domain"."""
    return module.split(".")[0]


def layer_of(module: str) -> int:
    for level, members in enumerate(LAYERS):
        if top(module) in members:
            return level
    raise AssertionError(f"daemon.{top(module)} is in no layer: add it to LAYERS in {Path(__file__).name}")


def python_files() -> list[Path]:
    """Every file of the package, its subpackages' too."""
    return sorted(PACKAGE.rglob("*.py"))


def layered_files() -> list[Path]:
    """The files of the layered modules (all but the package's own __init__)."""
    return [p for p in python_files() if p != PACKAGE / "__init__.py"]


def module_name(path: Path) -> str:
    """daemon/store.py -> "store"; daemon/domain/clinics.py -> "domain.clinics"."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def modules() -> list[str]:
    """The layered modules: a subpackage (daemon/domain/) counts as one."""
    return sorted({top(module_name(p)) for p in layered_files()})


def daemon_imports(source: str) -> Iterator[tuple[str, int]]:
    """Each daemon module `source` imports (at any depth: lazy imports count), with its line."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "daemon":
                yield from ((alias.name, node.lineno) for alias in node.names)
            elif node.module.startswith("daemon."):
                yield node.module.split(".")[1], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("daemon."):
                    yield alias.name.split(".")[1], node.lineno


def upward_imports(sources: Mapping[str, str]) -> list[str]:
    """`sources` by module name ("store", "domain.clinics"): imports of a layer at or above the module's own,
    other than of the module's own package."""
    return [
        f"daemon/{module.replace('.', '/')}.py:{line} imports daemon.{target} "
        f"(layer {layer_of(target)} >= {layer_of(module)})"
        for module, source in sources.items()
        for target, line in daemon_imports(source)
        if target != top(module) and layer_of(target) >= layer_of(module)
    ]


def test_every_module_has_a_layer() -> None:
    assert [m for m in modules() if not any(m in layer for layer in LAYERS)] == []
    assert sum(len(layer) for layer in LAYERS) == len(modules()), "LAYERS names a module that does not exist"


def test_no_module_imports_one_at_or_above_its_own_layer() -> None:
    assert upward_imports({module_name(p): p.read_text() for p in layered_files()}) == []


def test_the_layer_check_finds_upward_imports_lazy_or_not() -> None:
    sources = {
        "calendar": "from daemon.store import Claim\n",  # a sibling in the same layer
        "metrics": "import daemon.domain\n\ndef f() -> None:\n    from daemon import sync\n",
        "verify": "from daemon.wiring import open_store\n",  # downward: fine
        # Within its own package: fine; out of it, from the bottom layer: upward.
        "domain.clinics": "from daemon.domain.reply import Reply\nfrom daemon import domain\nimport daemon.logs\n",
    }
    assert upward_imports(sources) == [
        "daemon/calendar.py:1 imports daemon.store (layer 1 >= 1)",
        "daemon/metrics.py:4 imports daemon.sync (layer 3 >= 1)",
        "daemon/domain/clinics.py:3 imports daemon.logs (layer 0 >= 0)",
    ]


def test_operator_commands_do_not_import_the_main_loop() -> None:
    probe = (
        "import sys; import daemon.cli, daemon.verify, daemon.google_connect, daemon.admin; "
        "print(sorted(m for m in sys.modules if m.startswith('daemon.')))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    modules_loaded = set(ast.literal_eval(loaded.stdout.strip()))
    assert "daemon.wiring" in modules_loaded
    assert modules_loaded & MAIN_LOOP == set()


def sql_functions(conn: psycopg.Connection) -> set[str]:
    """The functions a database path can call (those in `private` are reachable only from SQL)."""
    rows = conn.execute("select proname from pg_catalog.pg_proc where pronamespace = 'public'::regnamespace").fetchall()
    return {name for (name,) in rows}


def string_constants(path: Path) -> Iterator[tuple[str, int]]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value, node.lineno


def test_only_the_store_names_sql_functions(admin: psycopg.Connection) -> None:
    functions = sql_functions(admin)
    assert {"claim_appointments", "vapi_tool_call", "sync_backlog"} <= functions  # the catalogue was read
    named = [
        f"daemon/{path.relative_to(PACKAGE)}:{line} names {value}()"
        for path in python_files()
        if module_name(path) != "store"
        for value, line in string_constants(path)
        if value in functions
    ]
    assert named == []
    calls = [
        f"daemon/{path.relative_to(PACKAGE)}:{node.lineno} calls .{node.func.attr}()"
        for path in python_files()
        if module_name(path) != "store"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"call", "call_rows"}
    ]
    assert calls == []
    # And the store does name them: the check reads the right files.
    assert any(value == "claim_appointments" for value, _ in string_constants(PACKAGE / "store.py"))
