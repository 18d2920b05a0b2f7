"""Dependencies point one way: operator -> pipeline (flows) -> stages -> science kernels, with storage a layer
the stages use; the CLI, the entry point of everything, sits on top. Checked on the source (every import
statement, including those inside functions), for the `mousflow` package and the operator package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flows" / "mousflow"
OPERATOR = ROOT / "operator" / "mousflow_operator"

# layer -> modules it must never import (prefixes)
FORBIDDEN = {
    "science": ["prefect", "kubernetes", "kopf", "s3fs", "fsspec", "zarr", "xarray", "mousflow.storage",
                "mousflow.stages", "mousflow.pipeline", "mousflow.simulate", "mousflow_operator", "mousflow.cli"],
    "storage": ["prefect", "kubernetes", "kopf", "mousflow.stages", "mousflow.pipeline", "mousflow.science",
                "mousflow_operator", "mousflow.cli"],
    "model": ["prefect", "kubernetes", "kopf", "s3fs", "mousflow.storage", "mousflow.stages", "mousflow.pipeline",
              "mousflow.science", "mousflow_operator"],
    "telescope": ["prefect", "kubernetes", "mousflow.storage", "mousflow.stages", "mousflow.pipeline",
                  "mousflow.science", "mousflow_operator"],
    "stages": ["prefect", "kubernetes", "kopf", "mousflow.pipeline", "mousflow_operator", "mousflow.cli"],
    "pipeline": ["kopf", "mousflow_operator", "mousflow.cli"],
    "simulate": ["prefect", "kubernetes", "kopf", "mousflow.stages", "mousflow.pipeline", "mousflow_operator"],
    "ingest": ["prefect", "kubernetes", "kopf", "mousflow.stages", "mousflow.pipeline", "mousflow.science",
               "mousflow_operator"],
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_down_only(layer):
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, layer
    violations = [f"{f.relative_to(ROOT)} imports {name}" for f in files for name in sorted(_imports(f))
                  if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[layer])]
    assert not violations, "\n".join(violations)


def test_the_operator_uses_the_flows_and_nothing_above_or_beside_it():
    """The operator drives flows and reads their records; it neither computes science nor calls the CLI."""
    bad = ["mousflow.cli", "mousflow.science", "mousflow.simulate", "mousflow.ingest", "prefect.cli"]
    files = sorted(OPERATOR.rglob("*.py"))
    assert files
    violations = [f"{f.relative_to(ROOT)} imports {name}" for f in files for name in sorted(_imports(f))
                  if any(name == b or name.startswith(b + ".") for b in bad)]
    assert not violations, "\n".join(violations)


def test_nothing_below_the_operator_imports_it():
    """Only the CLI (the entry point: `mousflow operator`, `mousflow crd`) may import the operator package."""
    files = [f for f in sorted(PACKAGE.rglob("*.py")) if f.name != "cli.py"]
    violations = [f"{f.relative_to(ROOT)} imports {name}" for f in files for name in sorted(_imports(f))
                  if name == "mousflow_operator" or name.startswith("mousflow_operator.")]
    assert not violations, "\n".join(violations)


def test_operator_is_not_importable_as_the_standard_library_operator():
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "flows" / "__init__.py").exists()
    import operator

    assert hasattr(operator, "itemgetter") and "site-packages" not in str(getattr(operator, "__file__", ""))


@pytest.mark.parametrize("helper", ["errors.py", "kube_config.py", "pod_security.py", "process_env.py"])
def test_the_shared_helpers_at_the_package_top_import_no_layer(helper):
    """Helpers every layer may use (one error vocabulary, kube-config loading, the restricted securityContext)
    sit below all of them: they import no mousflow module but mousflow.errors."""
    names = _imports(PACKAGE / helper)
    violations = sorted(n for n in names if n.startswith("mousflow") and n != "mousflow.errors")
    assert not violations, f"{helper} imports {violations}"
