"""The named-query loader: every SQL statement is found by a unique name."""

import re

import pytest

from segsvc import queries

QUERY_CALL = re.compile(
    r'(?:fetch_one|fetch_all|fetch_prepared|fetch_rows|execute)\(\s*[\w.()]+,\s*"(\w+)"'
)


def test_blocks_are_split_by_name_lines():
    text = "-- file comment\n\n-- name: first\nSELECT 1;\n\n-- name: second\n-- why\nSELECT 2;\n"
    assert queries.parse_queries(text, "x.sql") == {
        "first": "SELECT 1;",
        "second": "-- why\nSELECT 2;",
    }


def test_an_empty_block_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        queries.parse_queries("-- name: nothing\n\n", "x.sql")


def test_a_name_defined_twice_across_files_is_an_error(tmp_path):
    (tmp_path / "a.sql").write_text("-- name: same\nSELECT 1;\n")
    (tmp_path / "b.sql").write_text("-- name: same\nSELECT 2;\n")
    with pytest.raises(ValueError, match="defined twice"):
        queries.load_queries(tmp_path)


def test_every_query_used_in_the_code_exists_and_every_query_is_used():
    sources = "\n".join(
        path.read_text() for path in (queries.QUERY_DIRECTORY.parent / "segsvc").rglob("*.py")
    )
    used = set(QUERY_CALL.findall(sources))
    assert used == set(queries.load_queries())


def test_every_query_binds_its_parameters():
    for name, text in queries.load_queries().items():
        assert "{" not in text, name
        assert "%s" not in text, name


def test_no_query_names_a_parameter_in_a_comment():
    """The driver substitutes %(name)s everywhere in the text, comments included."""
    for name, text in queries.load_queries().items():
        comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("--"))
        assert "%(" not in comments, name


def test_the_package_exposes_its_domain_modules_not_the_blueprints():
    import segsvc
    from segsvc import reports, segments, users

    for module in (reports, segments, users):
        assert module.__name__ == f"segsvc.{module.__name__.rsplit('.', 1)[1]}"
        assert getattr(segsvc, module.__name__.rsplit(".", 1)[1]) is module
