"""Every notebook runs top to bottom through a real Jupyter kernel (papermill), with CI's smallest sizes.

Each notebook has one cell tagged ``parameters`` (sizes, epochs, device, output folder); papermill injects the
values of :data:`CI_PARAMETERS` after it, as Jupyter users do with ``papermill -p``. An error in any cell fails the
test, naming the notebook, the cell and the error. Notebooks are committed without outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

#: what CI injects into each notebook's parameters cell: the smallest sizes that still run every cell
CI_PARAMETERS: dict[str, dict[str, Any]] = {
    "01_phantoms_and_datalists": {"N": 60},
    "02_semi_supervised_segmentation": {"phantom_n": 60, "max_epochs": 1, "cross_teaching_epochs": 1},
    "03_self_supervised_pretraining": {"phantom_n": 80, "pretrain_epochs": 1, "probe_every": 1, "finetune_epochs": 1},
    "04_your_own_data": {"n_images": 30, "max_epochs": 1, "samples_per_epoch": 8},
    "05_benchmark": {"phantom_n": 60, "max_epochs": 1, "seeds": [0, 1]},
}


class NotebookError(AssertionError):
    """A cell of a notebook raised: the message names the notebook, the cell and the error."""


def execute(path: Path, parameters: dict[str, Any], out_dir: Path) -> Path:
    """Run ``path`` through papermill with ``parameters`` in a fresh ``python3`` kernel; return the executed copy.

    Raises:
        NotebookError: a cell raised (its index, first source line, error type and message are in the message).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / path.name
    try:
        papermill.execute_notebook(
            str(path),
            str(executed),
            parameters={**parameters, "out_dir": str(out_dir / "work")},
            kernel_name="python3",
            cwd=str(path.parent),
            progress_bar=False,
            log_output=False,
        )
    except PapermillExecutionError as e:
        first = (e.source or "").strip().splitlines()[:1]
        raise NotebookError(
            f"{path.name}: the cell starting {first[0] if first else ''!r} (cell {e.cell_index} of the executed copy, "
            f"papermill's parameters cell counted) raised {e.ename}: {e.evalue}"
        ) from None
    return executed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path) -> None:
    assert path.stem in CI_PARAMETERS, f"{path.name}: add its smallest sizes to CI_PARAMETERS"
    executed = execute(path, CI_PARAMETERS[path.stem], tmp_path)
    cells = json.loads(executed.read_text())["cells"]
    ran = [c for c in cells if c["cell_type"] == "code"]
    assert ran and all(c.get("execution_count") for c in ran), f"{path.name}: a code cell did not run"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_committed_clean(path: Path) -> None:
    """No outputs in git; exactly one ``parameters`` cell, which CI's parameters all match."""
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"{path.name}: code cells {dirty} carry outputs; clear them before committing"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters', want 1"
    names = {ln.split("=")[0].strip() for ln in "".join(tagged[0]["source"]).splitlines() if "=" in ln}
    missing = set(CI_PARAMETERS.get(path.stem, {})) | {"out_dir"}
    assert missing <= names, f"{path.name}: parameters cell lacks {sorted(missing - names)}"


def test_a_failing_cell_fails_the_test_and_is_named(tmp_path: Path) -> None:
    """A planted error: the test must fail, naming the notebook, the cell and the error."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(
        cells=[
            new_code_cell("out_dir = None", metadata={"tags": ["parameters"]}),
            new_code_cell("x = 1"),
            new_code_cell("raise ValueError('planted in the third cell')"),
            new_code_cell("y = 2"),
        ],
        metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    )
    path = tmp_path / "planted.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(
        NotebookError,
        match=r"planted\.ipynb: the cell starting \"raise ValueError.* raised ValueError: planted in the third",
    ):
        execute(path, {}, tmp_path / "out")
