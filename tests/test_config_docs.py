"""The README's configuration table is generated from the schema and registries; it must not drift."""
from pathlib import Path

from damoc.config_doc import BEGIN, END, readme_block

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_table_matches_the_schema():
    text = README.read_text()
    assert BEGIN in text and END in text, "README lacks the generated config table markers"
    current = text[text.index(BEGIN): text.index(END) + len(END)]
    assert current == readme_block(), "README config table is stale: run `damoc config table` and paste it"


def test_table_lists_every_key_and_registered_method():
    from damoc.config import SECTIONS
    from damoc.config_params import key_rows, section_model
    from damoc.filtering import FILTERS

    block = readme_block()
    for section in SECTIONS:
        for key, *_ in key_rows(section_model(section)):
            assert f"`{section}.{key}`" in block
    for name in FILTERS.names():
        assert f"| `filter.method` | `{name}` |" in block
    assert "`filter.options.graphcut.lambda` | `0.4`" in block
