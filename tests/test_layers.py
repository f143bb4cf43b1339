"""The layers point one way (docs/architecture.md): a module imports only from its own group
and from groups in lower tiers, lazy imports (inside functions) included.

The tiers below are the rule; the test reads every import statement of the package with
``ast``, so an import hidden in a function body counts the same as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "modaverse"
#: Top-level packages the rule covers: the model zoo sits beside modaverse/ (the design card's layout).
PACKAGES = ("modaverse", "model_zoo")

#: Lowest first. A group may import its own modules and any group in a lower tier; groups in one
#: tier are independent of each other (training and evaluation never import each other).
TIERS: list[tuple[str, ...]] = [
    ("core",),                      # errors, atomic writes, devices, the modality table, the strict base
    ("config",),                    # the schema of every section
    ("checkpoint",),                # trained weights + the settings they were trained with
    ("media",),                     # 1. files -> tower inputs (and outputs -> files)
    ("encoder",),                   # 2. tower inputs -> ImageBind embeddings
    ("adaptors",),                  # 3. embeddings -> soft tokens
    ("llm",),                       # 4. prompts, the language model
    ("meta",),                      # 5. the meta-response and its grammar
    ("zoo",),                       # 6. meta-response invocations -> generated files (model_zoo/)
    ("data",),                      # records, conversations, synthesis, validation
    ("instruct",),                  # instruction data from a chat API
    ("tiny",),                      # the offline kit (tokenizer; generators in model_zoo/tiny.py)
    ("pipeline",),                  # 7. the assistant that joins the stages
    ("training", "evaluation", "serve"),
    ("cli",),
]
RANK = {group: i for i, tier in enumerate(TIERS) for group in tier}


def group_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "model_zoo":  # the zoo's stage, but its tiny plug-ins belong to the offline kit
        return "tiny" if parts[1:2] == ["tiny"] else "zoo"
    if parts[0] != "modaverse":
        return None
    if len(parts) == 1 or parts[1].startswith("__"):
        return "root"  # the lazy public API and ``python -m``: above everything
    return parts[1]


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, wherever it sits."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from modaverse import meta`` imports the group named after it
            targets = [f"{base}.{a.name}" for a in node.names] if base == "modaverse" else [base]
            out += [(node.lineno, t) for t in targets]
    return out


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted(p for package in PACKAGES for p in (root / package).rglob("*.py")):
        here = group_of(module_name(path, root))
        if here == "root":
            continue
        for line, target in imports(path, root):
            there = group_of(target)
            if there is None or there == here:
                continue
            if there == "root":
                if target == "modaverse.__version__":
                    continue
                found.append(f"{path.relative_to(root)}:{line}: imports {target} (the lazy public API)")
            elif there not in RANK:
                found.append(f"{path.relative_to(root)}:{line}: imports {target}, a group missing from TIERS")
            elif RANK[there] >= RANK[here]:
                found.append(f"{path.relative_to(root)}:{line}: {here} imports {target} ({there} is not below it)")
    return found


def test_every_group_has_a_tier():
    groups = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
              if (p.suffix == ".py" and p.stem not in ("__init__", "__main__")) or (p / "__init__.py").is_file()}
    groups |= {group_of(module_name(p)) for p in (ROOT / "model_zoo").rglob("*.py")}
    assert groups == set(RANK), f"groups without a tier: {groups - set(RANK)}; tiers without code: {set(RANK) - groups}"


def test_layers_point_one_way():
    found = violations()
    assert not found, "upward imports:\n" + "\n".join(found)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """A lazy upward import in a function body is found (the rule cannot pass by not looking)."""
    fake = tmp_path / "modaverse" / "media"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from modaverse.pipeline.assistant import ModaVerse\n"
                                 "    from ..cli import main\n")
    found = violations(tmp_path)
    assert len(found) == 2 and all("media imports" in f for f in found), found


def test_the_checker_covers_the_top_level_model_zoo(tmp_path):
    """model_zoo/ is stage 6 though it sits outside modaverse/; its tiny plug-ins rank with the kit."""
    (tmp_path / "modaverse").mkdir()
    zoo = tmp_path / "model_zoo"
    zoo.mkdir()
    (zoo / "bad.py").write_text("from modaverse.pipeline.assistant import ModaVerse\nfrom modaverse.meta import schema\n")
    (zoo / "tiny.py").write_text("from modaverse.tiny import tokenizer\nfrom modaverse.data.synth import corpus\n")
    found = violations(tmp_path)
    assert found == ["model_zoo/bad.py:1: zoo imports modaverse.pipeline.assistant (pipeline is not below it)"], found


def test_no_module_over_500_lines():
    long = [f"{p.relative_to(ROOT)}: {n}" for package in PACKAGES for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500]
    assert not long, long


def test_every_package_folder_ships():
    """pyproject lists packages by hand (configs/ maps into the package); a folder left out would not install."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {module_name(p.parent) for package in PACKAGES for p in (ROOT / package).rglob("__init__.py")}
    assert folders <= listed, f"not in pyproject's packages: {sorted(folders - listed)}"
