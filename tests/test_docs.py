"""The README stays a front door and the docs keep up with the code: README.md is at most
350 lines, every relative link in it reaches a file of the repository, and every
environment variable gpt3dev/settings.py reads is on the settings page. (`make docs`
builds the site with --strict, which checks the links between the pages.)"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SETTINGS_PAGE = ROOT / "docs" / "settings.md"

# [text](target) and ![alt](target); the target ends at whitespace or the closing bracket.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# env_str("NAME" ..., env_int("NAME" ..., os.environ.get("NAME") ...
ENV_READ = re.compile(r"\b(?:env_\w+|os\.environ\.get|os\.getenv)\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']")


def _relative_links(text: str) -> list[str]:
    """Link targets that point into the repository (no scheme, no mail, not a bare anchor)."""
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        targets.append(target)
    return targets


def test_readme_is_a_front_door_of_at_most_350_lines():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 350, f"README.md has {lines} lines; move detail into docs/ (the limit is 350)"


def test_every_relative_link_in_the_readme_reaches_a_file():
    text = README.read_text(encoding="utf-8")
    targets = _relative_links(text)
    assert targets, "README.md links nowhere into the repository: the docs links are missing"
    missing = []
    for target in targets:
        path = target.split("#", 1)[0]
        if path and not (ROOT / path).exists():
            missing.append(target)
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_the_link_parser_sees_what_a_reader_clicks():
    """A guard for the two tests above: the parser finds relative links and images and
    skips URLs and anchors, so a broken link cannot slip past unnoticed."""
    sample = (
        "[a](docs/a.md) ![b](docs/b.png) [c](https://example.com/x) [d](#anchor) "
        "[e](docs/e.md#part) <http://127.0.0.1:8000/>"
    )
    assert _relative_links(sample) == ["docs/a.md", "docs/b.png", "docs/e.md#part"]


def test_every_setting_read_from_the_environment_is_on_the_settings_page():
    names = set(ENV_READ.findall((ROOT / "gpt3dev" / "settings.py").read_text(encoding="utf-8")))
    # The parser must find the settings (a change in how settings.py reads them would
    # otherwise make this test pass on an empty set).
    assert {"DATABASE_URL", "SECRET_KEY", "KV_CACHE_MEMORY", "CPU_DTYPE"} <= names
    page = SETTINGS_PAGE.read_text(encoding="utf-8")
    missing = sorted(name for name in names if f"`{name}`" not in page)
    assert not missing, f"docs/settings.md does not document: {missing}"
