"""The README's and docs' pages and their fenced code blocks, for the tests that run or check
them."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(language):
    """[(page, index, code)] of the fenced blocks in `language`."""
    found = []
    for page in PAGES:
        for index, (lang, code) in enumerate(re.findall(r"```(\w*)\n(.*?)```", page.read_text(),
                                                        re.S)):
            if lang == language:
                found.append((page, index, code))
    return found
