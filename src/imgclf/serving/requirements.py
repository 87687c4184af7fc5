"""Print the packages a serving image installs, one requirement per line.

    python src/imgclf/serving/requirements.py --runtime auto --bundle BUNDLE_DIR

The Dockerfile runs this file as a script after `pip install --no-deps .`, when nothing else
is installed yet, so it imports only the standard library. The list comes from the installed
imgclf's metadata, which keeps pyproject.toml the one place where versions are set:

- `litert`: the `serve` extra, which has no TensorFlow;
- `tensorflow`: the `serve` extra plus the core `tensorflow` and `keras` requirements, for a
  bundle or run served from `model.keras`;
- `auto`: `litert` when BUNDLE_DIR contains a `.tflite` file, else `tensorflow`.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

SERVE_EXTRA = "serve"
TENSORFLOW_PACKAGES = ("tensorflow", "keras")
RUNTIMES = ("auto", "litert", "tensorflow")

_EXTRA_MARKER = re.compile(r"""\s*(and\s+)?extra\s*==\s*["']([^"']+)["']""")


def split_marker(requirement: str) -> tuple[str, str | None, str]:
    """Split 'name>=1; os_name == "posix" and extra == "serve"' into (requirement, extra, other markers)."""
    text, _, marker = requirement.partition(";")
    found = _EXTRA_MARKER.search(marker)
    extra = found.group(2) if found else None
    rest = _EXTRA_MARKER.sub("", marker).strip()
    rest = re.sub(r"^and\s+", "", rest).strip()
    return text.strip(), extra, rest


def serving_requirements(runtime: str, distribution: str = "imgclf") -> list[str]:
    """Return the requirement lines for `runtime` ("litert" or "tensorflow")."""
    lines = []
    for requirement in metadata.requires(distribution) or []:
        text, extra, marker = split_marker(requirement)
        name = re.split(r"[<>=!~\[ ]", text, maxsplit=1)[0].lower()
        wanted = extra == SERVE_EXTRA or (runtime == "tensorflow" and extra is None and name in TENSORFLOW_PACKAGES)
        if wanted:
            lines.append(f"{text}; {marker}" if marker else text)
    return lines


def choose_runtime(runtime: str, bundle: Path | None) -> str:
    if runtime != "auto":
        return runtime
    if bundle is not None and any(bundle.rglob("*.tflite")):
        return "litert"
    return "tensorflow"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="litert (no TensorFlow), tensorflow, or auto (litert when the bundle has a .tflite file).")
    parser.add_argument("--bundle", type=Path, help="The bundle that `auto` looks into.")
    args = parser.parse_args(argv)
    runtime = choose_runtime(args.runtime, args.bundle)
    print(f"serving runtime: {runtime}", file=sys.stderr)
    print("\n".join(serving_requirements(runtime)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
