"""Profiles: inheritance across files and folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from offroll_audit.problems import UsageError
from offroll_audit.profile import load_profile


def test_a_chain_of_profiles_resolves_each_parent_next_to_the_file_naming_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    b = tmp_path / "b" / "b.toml"
    (tmp_path / "a" / "a.toml").write_text(f'inherits = "{b}"\n[statistics]\noutlier_p = 0.01\n')
    b.write_text('inherits = "c"\n[statistics]\nmin_expected = 2.0\n')
    (tmp_path / "b" / "c.toml").write_text('inherits = "strict"\n[statistics]\np_high_95 = 0.02\n')
    profile = load_profile(str(tmp_path / "a" / "a.toml"))
    assert profile.statistics["outlier_p"] == 0.01
    assert profile.statistics["min_expected"] == 2.0
    assert profile.statistics["p_high_95"] == 0.02
    assert profile.source == str(tmp_path / "a" / "a.toml")
    assert load_profile("strict").select == profile.select  # the shipped root is reached


def test_a_profile_that_inherits_from_itself_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text('inherits = "y"\n')
    (tmp_path / "y.toml").write_text('inherits = "x"\n')
    with pytest.raises(UsageError, match=r"y\.toml: inherits from itself"):
        load_profile(str(tmp_path / "x.toml"))


def test_measured_error_rates_stay_with_the_rules_they_were_measured_on(tmp_path: Path) -> None:
    """The default profile's [select.measured] describes its own rules: a profile that only
    tunes settings keeps it; one that replaces the rules (strict, ofsted) does not."""
    assert load_profile("default").select["measured"]
    assert "measured" not in load_profile("strict").select
    tuned = tmp_path / "tuned.toml"
    tuned.write_text('inherits = "default"\n[select]\nmin_exits = 6\n', encoding="utf-8")
    assert load_profile(str(tuned)).select["measured"] == load_profile("default").select["measured"]
    own = tmp_path / "own.toml"
    own.write_text(
        'inherits = "default"\n[[select.rules]]\ncode = "X"\nexplain = "x"\noutcome = "ehe"\n'
        'bands = ["high_998"]\n[select.measured]\n"Mine" = "1 in 20"\n',
        encoding="utf-8",
    )
    assert load_profile(str(own)).select["measured"] == {"Mine": "1 in 20"}
