"""The docs cannot drift from the code: generated tables, named tests, README links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cogapp import Cog

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
README = ROOT / "README.md"


def test_generated_tables_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    status = Cog().main(["cog", "--check", "--verbosity=1", "-I", str(DOCS), *map(str, PAGES)])
    out = capsys.readouterr().out
    assert status == 0, (
        "the tables generated into docs/ no longer match the code: run `make docs` "
        f"and commit the pages\n{out}"
    )


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    missing = [p.name for p in PAGES if f": {p.name}" not in nav]
    assert missing == [], f"pages missing from mkdocs.yml's nav: {missing}"


def test_tests_named_in_the_docs_exist() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    paths = set(re.findall(r"\btests/[\w/]+\.py", text))
    assert paths, "no test named in docs/"
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert missing == [], f"docs/ names test files that do not exist: {missing}"
    defined = {
        name
        for f in (ROOT / "tests").rglob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", f.read_text(encoding="utf-8"), re.M)
    }
    named = set(re.findall(r"\b(test_\w+)\b(?!\.py)", text))
    named -= {Path(p).stem for p in paths}
    assert named - defined == set(), f"docs/ names tests that do not exist: {named - defined}"
    wrong = [
        f"{path}::{name}"
        for path, name in re.findall(r"\b(tests/[\w/]+\.py)::(test_\w+)", text)
        if not re.search(rf"^def {name}\b", (ROOT / path).read_text(encoding="utf-8"), re.M)
    ]
    assert wrong == [], f"docs/ names tests in the wrong file: {wrong}"


def test_readme_is_a_landing_page() -> None:
    text = README.read_text(encoding="utf-8")
    lines = text.count("\n")
    assert lines <= 250, f"README.md has {lines} lines; the reference belongs in docs/"
    for words in ("make demo", "make test", "make install", "make docs"):
        assert words in text, f"README.md does not mention `{words}`"
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert local, "README.md links to no docs page"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert missing == [], f"README.md links to missing files: {missing}"


def test_benchmark_results_are_included_once() -> None:
    bench = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    assert "--8<-- [start:results]" in bench and "--8<-- [end:results]" in bench
    page = (DOCS / "performance.md").read_text(encoding="utf-8")
    assert '--8<-- "benchmarks/README.md:results"' in page


def test_command_outputs_shown_in_the_docs_are_generated() -> None:
    """A command's output pasted into a page goes stale; cog blocks (gen.session_output) don't."""
    outputs = re.compile(r"^(published snapshot |up to date: snapshot |snapshot {5}\d)", re.M)
    pasted = []
    for page in [*PAGES, README]:
        text = page.read_text(encoding="utf-8")
        generated = re.sub(r"\[\[\[cog.*?\[\[\[end\]\]\]", "", text, flags=re.S)
        pasted += [f"{page.name}: {m.group()}" for m in outputs.finditer(generated)]
    assert pasted == [], "write these with a cog block (docs/gen.py session_output)"
