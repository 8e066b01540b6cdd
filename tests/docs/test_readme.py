"""The README's library example runs as written; its set-up commands and every link hold."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted([README, *(ROOT / "docs").glob("*.md")])
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}  # urlsplit drops the brackets of [::1]


def test_readme_python_example_runs_and_trains(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "range_test.png").read_bytes()[:4] == b"\x89PNG"
    sched, bounds, work = namespace["sched"], namespace["bounds"], namespace["work"]
    assert sched.last_epoch == bounds.stop_iteration
    # stopped at the end of a cycle: the LR is back at the lower bound
    assert sched.get_last_lr()[0] == bounds.default.base_lr
    correct = sum(int((work.model(x).argmax(1) == y).sum()) for x, y in work.val_loader)
    assert correct / work.num_val > 0.85


def _setup_commands(text: str) -> list[str]:
    """The commands of the first code block under the README's "Set up and run" heading."""
    section = re.search(r"^## Set up and run.*?$(.*?)(?=^## )", text, flags=re.S | re.M)
    assert section, 'README has no "## Set up and run" section'
    block = re.search(r"```(?:sh|bash|console)?\n(.*?)```", section.group(1), flags=re.S)
    assert block, '"Set up and run" has no code block'
    lines = (line.split("#", 1)[0].strip() for line in block.group(1).splitlines())
    return [line for line in lines if line]


def test_readme_setup_is_exactly_make_run_and_make_test():
    assert _setup_commands(README.read_text()) == ["make run", "make test"]


def test_readme_setup_commands_are_makefile_targets():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", makefile, flags=re.M))
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, flags=re.M).group(1).split())
    for command in _setup_commands(README.read_text()):
        target = command.removeprefix("make ")
        assert target in targets, f"README runs `{command}` but the Makefile has no {target!r}"
        assert target in phony, f"Makefile target {target!r} is not .PHONY"


def test_setup_parser_sees_a_third_command():
    # The check above can fail: a README with three commands is caught.
    text = "## Set up and run\n\n```sh\nmake run  # x\nmake test\npip install y\n```\n\n## Next\n"
    assert _setup_commands(text) == ["make run", "make test", "pip install y"]


def _external_urls(text: str) -> list[str]:
    """Every http(s) URL in ``text`` whose host is not this machine."""
    urls = re.findall(r"https?://[^\s)\]>\"'`]+", text)
    return [url for url in urls if urlsplit(url).hostname not in LOCAL_HOSTS]


def test_url_finder_catches_another_host():
    text = "see [the paper](https://arxiv.org/abs/1506.01186) or `curl http://localhost:8000/x`"
    assert _external_urls(text) == ["https://arxiv.org/abs/1506.01186"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_link_to_no_other_host(doc):
    assert _external_urls(doc.read_text()) == [], f"{doc.name} links outside the repository"


def _relative_targets(text: str) -> list[str]:
    """The targets of markdown links and images that are neither URLs nor in-page anchors."""
    targets = re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
    targets += re.findall(r"<img[^>]*\ssrc=\"([^\"]+)\"", text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_link_finder_sees_files_images_and_anchors():
    text = "[d](../shared/DESIGN.md) ![p](docs/x.png) [a](#x) [w](https://e.org/), [m](mailto:a@b)"
    assert _relative_targets(text) == ["../shared/DESIGN.md", "docs/x.png", "#x"]


def _anchors(markdown: Path) -> set[str]:
    """The anchors a markdown renderer gives the headings of ``markdown``."""
    headings = re.findall(r"^#+ (.+)$", markdown.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_relative_links_stay_in_the_repository_and_exist(doc):
    for target in _relative_targets(doc.read_text()):
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        assert path.is_relative_to(ROOT), f"{doc.name} links outside the repository: {target}"
        assert path.exists(), f"{doc.name} links to a missing file: {target}"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{doc.name} links to a missing heading: {target}"
