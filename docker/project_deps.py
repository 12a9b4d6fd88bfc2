"""Print pyproject.toml's runtime dependencies as a requirements file, one per line.

Used by the Dockerfile to install dependencies before the code is copied, so that a code
change does not reinstall torch:

    python3 project_deps.py pyproject.toml --only torch torchvision    # from TORCH_INDEX_URL
    python3 project_deps.py pyproject.toml --exclude torch torchvision # from PyPI
"""

import argparse
import re
import sys

try:
    import tomllib
except ImportError:  # Python 3.10 (a CUDA base image's python3): pip vendors the same parser
    from pip._vendor import tomli as tomllib


def requirement_name(spec: str) -> str:
    """The normalised distribution name of a PEP 508 requirement ("Torch>=2.4" -> "torch")."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    if match is None:
        raise ValueError(f"not a requirement: {spec!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def select(specs: list, only: list, exclude: list) -> list:
    """The specs whose names are in `only` (when given) and not in `exclude`."""
    only_names = {requirement_name(n) for n in only}
    excluded = {requirement_name(n) for n in exclude}
    return [
        s
        for s in specs
        if (not only_names or requirement_name(s) in only_names) and requirement_name(s) not in excluded
    ]


def main(argv: list = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="NAME")
    args = parser.parse_args(argv)
    with open(args.pyproject, "rb") as f:
        specs = tomllib.load(f)["project"]["dependencies"]
    chosen = select(specs, args.only, args.exclude)
    missing = {requirement_name(n) for n in args.only} - {requirement_name(s) for s in chosen}
    if missing:
        print(f"{args.pyproject}: no dependency named {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    print("\n".join(chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
