"""The import graph stays layered: the model and the weights never reach the optimiser, and
the file formats know nothing of folders or fetching (read statically, so nothing is run)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "jaxcombine"

# module -> package modules it must never import, at the top or inside a function
FORBIDDEN = {
    "model": {"engine", "driver", "job", "weights", "weight_fetch"},
    "weights": {"engine", "driver", "job"},
    "weight_formats": {"engine", "driver", "job", "weights", "weight_fetch"},
    "weight_fetch": {"engine", "driver", "job"},
    "engine": {"driver", "job", "study", "batch"},  # the step knows nothing of the loop around it
    "_version": {"*"},
}


def imported(module: str) -> set[str]:
    """Package modules named by any import statement in ``jaxcombine/<module>.py``."""
    names = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxcombine"):
            names.add(node.module.partition(".")[2] or "")
            if node.module == "jaxcombine":
                names.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name.partition(".")[2] for a in node.names if a.name.startswith("jaxcombine."))
    names.discard("")
    return names


@pytest.mark.parametrize("module", FORBIDDEN)
def test_module_imports_stay_layered(module):
    found = imported(module)
    banned = found if "*" in FORBIDDEN[module] else found & FORBIDDEN[module]
    assert not banned, f"jaxcombine/{module}.py imports {sorted(banned)}"


def test_version_comes_from_its_own_module():
    """records and weight_fetch read __version__ from _version, not from the package above them."""
    for module in ("records", "weight_fetch"):
        assert "_version" in imported(module) and "__version__" not in imported(module)


def test_the_configuration_imports_only_its_rules_and_the_error_type():
    assert imported("config") <= {"rules"} and imported("rules") <= {"errors"}


def test_nothing_imports_the_command_line():
    for path in PACKAGE.glob("*.py"):
        command_line = {"cli", "cli_options"} & imported(path.stem)
        assert not command_line or path.stem in ("cli", "cli_options", "entry"), path.name
