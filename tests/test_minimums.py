"""The lowest versions pyproject.toml allows are the ones .ci/run proves: each `>=` bound of a
runtime dependency and of the `embedded` and `test` extras equals its pin in
.ci/minimums.txt, which .ci/run installs in a fresh environment to run the suite on."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
MINIMUMS = ROOT / ".ci" / "minimums.txt"
PROVEN_EXTRAS = ("embedded", "test")

# Pinned though not declared: what a declared dependency pulls in, at its lowest usable release.
TRANSITIVE = {"psycopg-binary": "psycopg", "pydantic-core": "pydantic", "greenlet": "sqlalchemy"}


def declared() -> list[Requirement]:
    extras = PROJECT["optional-dependencies"]
    return [Requirement(r) for r in PROJECT["dependencies"]] + [
        Requirement(r) for extra in PROVEN_EXTRAS for r in extras[extra]
    ]


def pins() -> dict[str, Version]:
    pinned: dict[str, Version] = {}
    for line in MINIMUMS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{line}: pin an exact version"
        name = canonicalize_name(requirement.name)
        assert name not in pinned, f"{name} is pinned twice"
        pinned[name] = Version(specifier.version)
    return pinned


def test_each_declared_lower_bound_is_the_pinned_minimum():
    pinned = pins()
    bounds = {}
    for requirement in declared():
        specifiers = list(requirement.specifier)
        assert [s.operator for s in specifiers] == [">="], (
            f"{requirement}: a lower bound and nothing else (no upper cap, no exclusions)"
        )
        bounds[canonicalize_name(requirement.name)] = Version(specifiers[0].version)
    assert {name: pinned.get(name) for name in bounds} == bounds


def test_every_pin_is_a_declared_dependency_or_what_one_pulls_in():
    names = {canonicalize_name(r.name) for r in declared()}
    pinned = pins()
    assert set(pinned) - names == set(TRANSITIVE)
    assert set(TRANSITIVE.values()) <= names
    # psycopg[binary] needs the binary package of its own version.
    assert pinned["psycopg-binary"] == pinned["psycopg"]


def test_ci_runs_the_suite_on_the_pins():
    run = (ROOT / ".ci" / "run").read_text()
    assert "-c .ci/minimums.txt -e '.[embedded,test]'" in run
