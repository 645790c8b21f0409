"""${VAR} substitution: every form, escapes, and its errors."""

from __future__ import annotations

import pytest

from corral.config.substitute import SubstitutionError, substitute

ENV = {"HOST": "db.internal", "EMPTY": "", "PORT": "5432"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${HOST}", "db.internal"),
        ("postgresql://${HOST}:${PORT}/app", "postgresql://db.internal:5432/app"),
        ("${MISSING:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),  # :- also replaces an empty value
        ("${EMPTY-fallback}", ""),  # - replaces only an unset one
        ("${MISSING-fallback}", "fallback"),
        ("${HOST:-fallback}", "db.internal"),
        ("${MISSING:-${HOST}}", "db.internal"),  # defaults are substituted too
        ("${MISSING:-}", ""),
        ("$${HOST}", "${HOST}"),  # $${ is a literal ${
        ("pa$$word$1", "pa$$word$1"),  # other $ are kept: keys and passwords contain them
        ("no dollars", "no dollars"),
        ("${HOST:?needed}", "db.internal"),
    ],
)
def test_substitution_forms_expand_to_expected_text(text: str, expected: str) -> None:
    assert substitute(text, ENV).value == expected


def test_unset_plain_variable_becomes_empty_and_is_reported() -> None:
    result = substitute("x-${NOPE}-y", ENV)
    assert result.value == "x--y"
    assert result.unset == ["NOPE"]
    assert result.whole_unset is False


def test_whole_value_unset_variable_is_flagged_so_the_key_can_be_left_out() -> None:
    result = substitute("${NOPE}", ENV)
    assert (result.value, result.unset, result.whole_unset) == ("", ["NOPE"], True)


def test_required_variable_error_carries_the_message() -> None:
    with pytest.raises(SubstitutionError, match=r"^DB_PASSWORD is not set: set it in \.env$"):
        substitute("${DB_PASSWORD:?set it in .env}", ENV)


def test_required_variable_with_colon_rejects_empty_and_without_colon_accepts_it() -> None:
    with pytest.raises(SubstitutionError, match=r"^EMPTY is empty$"):
        substitute("${EMPTY:?}", ENV)
    assert substitute("${EMPTY?}", ENV).value == ""
    with pytest.raises(SubstitutionError, match=r"^MISSING is not set$"):
        substitute("${MISSING?}", ENV)


@pytest.mark.parametrize("text", ["${HOST", "${1ABC}", "${HOST:=x}", "${}"])
def test_malformed_substitution_is_an_error(text: str) -> None:
    with pytest.raises(SubstitutionError):
        substitute(text, ENV)
