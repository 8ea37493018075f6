"""The dependency split: the API tier, the license proxy, the dispatcher and the CLI run on the base
package alone. The engine (torch, faster-whisper, CTranslate2, Silero VAD, onnxruntime) is the `worker`
extra; the API image installs only the base, so one engine import on that side breaks it."""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
ENGINE_MODULES = ("torch", "faster_whisper", "ctranslate2", "onnxruntime", "silero_vad")
#: Packages the base install serves (the API tier, proxy, dispatcher, checkpoint tools, core).
BASE_SIDE = ("hark", "web", "checkpoints", "license_proxy", "dispatcher")
#: `hark <sub>` commands that must start without the worker extra.
BASE_COMMANDS = ("api", "transcribe", "stream", "checkpoints", "license", "license-proxy", "keys", "route",
                 "dispatcher", "scale-sim")  # fmt: skip
#: Imported only inside a function of an optional command, with a message naming its extra when missing.
OPTIONAL_IMPORTS = {"matplotlib": "sim"}  # hark scale-sim --out PNG

# Runs in a fresh interpreter: any attempt to import the engine raises, then the API side is imported
# and the app is built and asked for /health.
BLOCKED_IMPORTS_PROGRAM = r"""
import importlib, importlib.abc, importlib.util, sys
BLOCKED = set(sys.argv[1].split(","))

class EngineBlocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"the base install must not need {name} (worker extra)")
        return None

sys.meta_path.insert(0, EngineBlocker())
from hark.cli import SUBCOMMANDS
from hark.settings import Settings
from web.app import create_app

app = create_app(Settings(_env_file=None))
assert app.test_client().get("/health").status_code == 200
for package in ("license_proxy", "dispatcher"):
    if importlib.util.find_spec(package) is not None:
        importlib.import_module(package)
for command in sys.argv[2].split(","):
    if command in SUBCOMMANDS:
        importlib.import_module(SUBCOMMANDS[command][0])
print("imported:", sorted(m for m in sys.modules if m.split(".")[0] in
                          ("web", "hark", "checkpoints", "license_proxy", "dispatcher")).__len__())
"""


def test_api_side_imports_without_the_worker_extra(redis_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", BLOCKED_IMPORTS_PROGRAM, ",".join(ENGINE_MODULES),
                           ",".join(BASE_COMMANDS)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "imported:" in done.stdout


def test_the_blocker_would_catch_an_engine_import() -> None:
    """The meta-path finder really refuses the engine (else the test above proves nothing)."""
    done = subprocess.run([sys.executable, "-c", BLOCKED_IMPORTS_PROGRAM.split("from hark.cli")[0] + "import torch",
                           ",".join(ENGINE_MODULES)], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0 and "worker extra" in done.stderr


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _closure(requirements: list[str]) -> set[str]:
    """Installed distributions (normalised names) the requirements pull in, extras of the roots included."""
    seen: set[str] = set()
    todo = [(Requirement(r), set(Requirement(r).extras)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        name = md.distribution(req.name).metadata["Name"].lower().replace("_", "-")
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for dep in md.requires(req.name) or []:
            sub = Requirement(dep)
            if sub.marker and not any(sub.marker.evaluate({"extra": e}) for e in (extras or {""})):
                continue
            todo.append((sub, set(sub.extras)))
    return {key.split("[")[0] for key in seen}


def _third_party_imports(packages: tuple[str, ...]) -> dict[str, str]:
    """Top-level third-party module -> a file importing it, over every .py file of `packages`."""
    local = {*packages, "workers", "celeryconfig"}
    found: dict[str, str] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in local:
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_base_side_imports_come_from_base_dependencies() -> None:
    """PyAV, Flask, Celery... that the API side imports are base dependencies, not worker-extra ones."""
    project = _project()
    base = _closure(project["dependencies"])
    worker_only = _closure(project["optional-dependencies"]["worker"]) - base
    assert {"torch", "faster-whisper", "ctranslate2"} <= worker_only
    providers = md.packages_distributions()
    problems = []
    for module, where in _third_party_imports(BASE_SIDE).items():
        if module in OPTIONAL_IMPORTS:
            extra = OPTIONAL_IMPORTS[module]
            assert any(r.startswith(module) for r in project["optional-dependencies"][extra]), (module, extra)
            continue
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        if not dists & base:
            problems.append(f"{where} imports {module} (from {sorted(dists) or 'nothing installed'}), "
                            "which the base dependencies do not provide")  # fmt: skip
    assert not problems, "\n".join(problems)


def test_makefile_installs_every_extra_with_torch_pinned_first() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    torch_line = makefile.index('pip install --quiet "torch==2.13.0"')
    extras_line = makefile.index('-e ".[')
    assert torch_line < extras_line
    installed = set(makefile[extras_line + len('-e ".['):].split("]", 1)[0].split(","))
    extras = _project()["optional-dependencies"]
    covered = {req for name in installed for req in extras[name]}
    missing = {name: sorted(set(reqs) - covered) for name, reqs in extras.items() if not set(reqs) <= covered}
    assert not missing, f"make install leaves out these extras' requirements: {missing}"
    assert 'torch==2.13.0' in _project()["optional-dependencies"]["worker"]
    engine = ("torch", "faster-whisper", "ctranslate2", "silero")
    assert not any(r.startswith(engine) for r in _project()["dependencies"])
