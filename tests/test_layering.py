"""The package reads top-down: no import cycle between its parts, and nothing below the pipeline imports it.

Imports inside functions count too: a lazy import hides a cycle from Python, not from a reader.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the parts above the pipeline: they may load one
ABOVE_PIPELINE = {"cli", "data", "evaluation", "training"}


def module_name(path: Path) -> tuple:
    """``(dotted name, is a package __init__)`` of a source file as installed (pipelines/ -> vmas_diffusion.pipelines)."""
    if path.is_relative_to(ROOT / "pipelines"):
        parts = ["vmas_diffusion", "pipelines", *path.relative_to(ROOT / "pipelines").with_suffix("").parts]
    else:
        parts = ["vmas_diffusion", *path.relative_to(ROOT / "vmas_diffusion").with_suffix("").parts]
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def part(module: str) -> str:
    """The unit a module belongs to: ``vmas_diffusion.X`` (``models.Y`` for the model families)."""
    names = module.split(".")[1:]
    if names[:1] == ["models"] and len(names) >= 2 and names[1] in ("codecs", "generators"):
        return "models." + names[1]
    return names[0] if names else ""


def import_graph() -> dict:
    """``{part: {part it imports, ...}}`` over every source file of the package."""
    files = [*(ROOT / "vmas_diffusion").rglob("*.py"), *(ROOT / "pipelines").rglob("*.py")]
    graph = {}
    for path in files:
        name, is_package = module_name(path)
        package = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    targets = [".".join(base + ([node.module] if node.module else []))]
                else:
                    targets = [node.module or ""]
            else:
                continue
            for target in targets:
                if target.startswith("vmas_diffusion.") and part(target) and part(name):
                    if part(target) != part(name):
                        graph.setdefault(part(name), set()).add(part(target))
    return graph


def find_cycle(graph: dict):
    """One cycle as a list of parts, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"pipelines", "building", "models.generators", "training"} <= set(graph)  # the walk saw the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_only_the_parts_above_the_pipeline_import_it():
    importers = {name for name, targets in import_graph().items() if "pipelines" in targets}
    assert importers <= ABOVE_PIPELINE, f"below the pipeline yet importing it: {sorted(importers - ABOVE_PIPELINE)}"


#: what generating music never needs: imported only by the commands and functions that use them
HEAVY_FOR_GENERATION = ("librosa", "numba", "matplotlib", "vmas_diffusion.training", "vmas_diffusion.evaluation",
                        "vmas_diffusion.data", "vmas_diffusion.losses")  # fmt: skip


def test_importing_loading_and_generating_leave_the_heavy_modules_alone():
    """A fresh interpreter imports the package, loads both bundled pipelines and generates a second of
    music: librosa (seconds of numba set-up), matplotlib, training and evaluation code stay unimported."""
    import json
    import os
    import subprocess
    import sys

    script = f"""
import json, sys
import torch
import vmas_diffusion
from vmas_diffusion import VideoToMusicPipeline
from vmas_diffusion.defaults import DEMO_VIDEO
for name in ("vmas-tiny-ar", "vmas-tiny-ldm"):
    pipe = VideoToMusicPipeline.from_pretrained(name)
    pipe.set_progress_bar_config(disable=True)
    pipe(video=str(DEMO_VIDEO), duration=1.0, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
print(json.dumps(sorted(m for m in {HEAVY_FOR_GENERATION!r} if m in sys.modules)))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert imported == [], f"generation imported {imported}"
