"""The package is layered: each folder is one layer and imports only go down.

Read statically (nothing is run) except the last test, which imports the configuration
and the recipes in a fresh interpreter and checks that JAX and Flax stay unloaded.
The order is drawn in docs/architecture.md.
"""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jaxcombine"

# folder -> its layer; a module may import its own folder and any lower layer, never a
# folder of its own or a higher layer. Root modules (errors, _version) are layer 0.
LAYERS = {
    "": 0,
    "options": 1,
    "io": 2,
    "networks": 3,
    "stats": 3,
    "engine": 4,
    "run": 5,
    "tools": 6,
    "study": 7,
    "batch": 7,
    "train": 7,
    "suite": 8,
    "cli": 9,
}


# The package's own __init__ (the lazy public face) and __main__ stand above every layer.
FACES = {"", "__main__"}


def modules() -> dict[str, Path]:
    """Dotted module name (relative to the package) -> file, the public faces left out."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if ".".join(parts) not in FACES:
            out[".".join(parts)] = path
    return out


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """Package modules named by any import statement in ``path``, at the top or in a function."""
    names = set()
    tree = ast.parse(path.read_text())
    typing_only = {  # `if TYPE_CHECKING:` imports are for annotations, never run
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
        for n in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("jaxcombine")
        ):
            base = node.module.partition(".")[2]
            for alias in node.names:  # `from jaxcombine.io import images` names a module
                dotted = f"{base}.{alias.name}" if base else alias.name
                names.add(dotted if dotted in known else base)
        elif isinstance(node, ast.Import):
            names.update(
                a.name.partition(".")[2] for a in node.names if a.name.startswith("jaxcombine.")
            )
    names.discard("")
    return names


def folder(module: str) -> str:
    return module.split(".")[0] if "." in module or module in LAYERS else ""


def test_every_folder_has_a_layer():
    found = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert found == set(LAYERS) - {""}, "name each new folder's layer in LAYERS (and docs)"


def test_imports_only_go_down():
    known = modules()
    assert len(known) > 40  # the walk found the package
    wrong = []
    for module, path in known.items():
        here = folder(module)
        for other in imported(path, known):
            there = folder(other)
            if there != here and LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{module} imports {other}")
    assert not wrong, wrong


def test_no_import_cycles():
    known = modules()
    graph = {m: {o for o in imported(p, known) if o in known} for m, p in known.items()}
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(m, stack):
        state[m] = 1
        for o in graph[m]:
            if o == m or o == "":
                continue
            if state.get(o) == 1:
                raise AssertionError(" -> ".join([*stack, m, o]))
            if o not in state:
                visit(o, [*stack, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_version_comes_from_its_own_module():
    """Records read __version__ from _version, not from the package above them."""
    known = modules()
    assert "_version" in imported(known["io.records"], known)
    assert imported(known["_version"], known) == set()


def test_configuration_recipes_and_a_runs_inputs_load_no_jax():
    """What the command line checks before JAX starts (cli/main.start_jax) needs no JAX:
    the configuration, the recipes, the run's inputs (every file's header), a study's
    sweep, eval's table path and eval-suite's grid."""
    code = (
        "import sys, jaxcombine.options.config as c, jaxcombine.options.recipe as r;"
        "from jaxcombine.run import inputs; from jaxcombine.suite import grid;"
        "from jaxcombine.io import folders;"
        "r.load('gatys'); got = inputs.read(c.RunConfig(init='content,style'));"
        "assert len(got.files) == 2 and got.recipe.name == 'gatys', got;"
        "assert c.parse_sweep('lr=1,2').values == (1.0, 2.0);"
        "folders.check_table_path('table.csv');"
        "assert grid.grid(['gatys'], [1.0, 3.0]) == ({'gatys': 'gatys'}, {'gatys': [1.0, 3.0]});"
        "print(sorted(m for m in ('jax', 'flax', 'optax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
