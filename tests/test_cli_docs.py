"""The README's CLI section and `damoc --help` (build_parser) agree: every subcommand, flag, choice and exit
code of the parser is documented there, and every command and flag the README shows exists (issue 22)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from damoc.cli import EPILOG, build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _cli_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## CLI\n")
    return text[start:text.index("\n## ", start + 1)]


def _usage_entries() -> dict[str, str]:
    """The code block's entries: 'damoc zoo build' -> its line(s) (continuation lines are indented)."""
    block = _cli_section().split("```")[1]
    entries: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        if line.startswith("damoc "):
            words = []
            for word in line.removeprefix("damoc ").split():
                if not re.fullmatch(r"[a-z][a-z-]*", word):
                    break
                words.append(word)
            current = " ".join(words) or "--debug"
            entries[current] = line.split("#")[0]
        elif current and line.strip() and not line.strip().startswith("#"):
            entries[current] += " " + line.split("#")[0]
    return entries


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, its parser) for every leaf subcommand."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _commands(child, (*path, name))


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and "--help" not in a.option_strings]


COMMANDS = dict(_commands(build_parser()))


def test_the_readme_shows_every_command():
    entries = _usage_entries()
    assert sorted(set(COMMANDS) - set(entries)) == []  # in --help, not in the README
    assert sorted(set(entries) - set(COMMANDS) - {"--debug"}) == []  # in the README, not in --help


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_of_a_command_is_on_its_readme_line_and_back(command):
    entry = _usage_entries()[command]
    documented = set(FLAG.findall(entry))
    flags = {s for a in _options(COMMANDS[command]) for s in a.option_strings if s.startswith("--")}
    assert sorted(flags - documented) == [], f"damoc {command}: in --help, not in the README"
    assert sorted(documented - flags) == [], f"damoc {command}: in the README, not in --help"


def test_global_flags_and_every_choice_are_documented():
    section = _cli_section()
    top = {s for a in _options(build_parser()) for s in a.option_strings if s.startswith("--")}
    assert top <= set(FLAG.findall(_usage_entries()["--debug"]))
    missing = [f"damoc {command} {a.option_strings[-1]} {choice}"
               for command, parser in COMMANDS.items() for a in _options(parser) for choice in (a.choices or ())
               if not re.search(rf"(?<![\w-]){re.escape(str(choice))}(?![\w-])", section)]
    assert missing == []


def _exit_codes(text: str) -> set[int]:
    """The codes of an 'Exit codes: 0 ok, 1 ..., 143 ...' sentence (asides in parentheses dropped)."""
    sentence = re.sub(r"\([^()]*\)", "", text[text.index("Exit codes:") + len("Exit codes:"):])
    sentence = sentence[:sentence.index(".")]
    return {int(code) for code in re.findall(r"(?:^|,)\s*(\d+)\s", sentence)}


def test_exit_codes_agree():
    assert _exit_codes(EPILOG) == _exit_codes(_cli_section()) == {0, 1, 2, 130, 143}


def test_the_readme_check_catches_drift(monkeypatch):
    """The checks above fail on an undocumented flag (so they are not vacuous)."""
    parser = COMMANDS["compare"]
    parser.add_argument("--undocumented-flag", action="store_true")
    try:
        with pytest.raises(AssertionError, match="in --help, not in the README"):
            test_every_flag_of_a_command_is_on_its_readme_line_and_back("compare")
    finally:
        parser._actions.pop()
