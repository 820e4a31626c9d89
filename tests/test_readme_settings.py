"""The README's configuration table is generated from Settings: a new or changed field must be documented."""

from pathlib import Path

from spotlight.server.settings_doc import BEGIN, END, settings_table


def test_readme_configuration_table_matches_settings() -> None:
    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    assert BEGIN in readme and END in readme, "README lacks the generated settings table markers"
    current = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert current == settings_table(), (
        "README's table is stale: run `python -m spotlight.server.settings_doc` and paste it"
    )
