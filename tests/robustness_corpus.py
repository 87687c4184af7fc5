"""The robustness corpus: hard input files, generated once per test session.

The generator `make_inputs.py` lives outside the repository, in `shared/robustness/` beside
the repository root, because CI clones the repository next to a `shared/` folder. Where the
generator is absent, every test that needs the corpus is skipped. The generator writes one
file or folder per case and a `manifest.json` that maps each case id (`C01`, ...) to its
paths, the behaviour expected of imgclf, and what plain Pillow did with each file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MAKE_INPUTS = REPO_ROOT.parent / "shared" / "robustness" / "make_inputs.py"


@dataclass
class Corpus:
    """A generated corpus: its root folder and the manifest entries by case id."""

    root: Path
    cases: dict[str, dict]

    def path(self, case_id: str, name: str | None = None) -> Path:
        """The case's first file, or its file whose path ends with `name`."""
        paths = [path for path in self.cases[case_id]["paths"] if not path.endswith("/")]
        if name is not None:
            paths = [path for path in paths if path.endswith(name)]
        if not paths:
            raise KeyError(f"case {case_id} has no file ending with {name!r}")
        return self.root / paths[0]

    def files(self, case_id: str) -> list[Path]:
        """All files the case lists, in manifest order (folders left out)."""
        return [self.root / path for path in self.cases[case_id]["paths"] if not path.endswith("/")]

    def folder(self, case_id: str) -> Path:
        """The case's top-level folder (a dataset root for the folder cases)."""
        return self.root / self.cases[case_id]["paths"][0].split("/")[0]

    def pillow_observed(self, case_id: str, name: str) -> dict:
        """What plain Pillow reported for the case's file ending with `name` when it was generated."""
        observed = self.cases[case_id]["pillow_observed"]
        return next(value for path, value in observed.items() if path.endswith(name))


def generate_corpus(out: Path) -> Corpus:
    """Run the generator into the empty folder `out` and read its manifest."""
    completed = subprocess.run(
        [sys.executable, str(MAKE_INPUTS), str(out)], capture_output=True, text=True, timeout=300
    )
    if completed.returncode != 0:
        pytest.fail(
            f"{MAKE_INPUTS} exited with status {completed.returncode}:\n{completed.stdout}{completed.stderr}"
        )
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    return Corpus(out, {case["id"]: case for case in manifest["cases"]})


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    if not MAKE_INPUTS.is_file():
        pytest.skip(f"{MAKE_INPUTS} is not available on this machine")
    return generate_corpus(tmp_path_factory.mktemp("robustness_corpus"))


def copy_into_class(source: Path, root: Path, label: str, name: str | None = None) -> Path:
    """Copy one corpus file into `root/label/` and return the copy's path."""
    target = root / label / (name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target
