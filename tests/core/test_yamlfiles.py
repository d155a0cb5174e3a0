"""Every YAML reader is bounded: alias bombs, huge files, deep nesting and numbers too long
to convert are refused with the file and the limit named, never followed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bpfleet_core import bundles, yamlfiles
from bpfleet_core.netpol import validating


def alias_bomb(levels: int, width: int = 10) -> str:
    """The "billion laughs": each level a list of ``width`` aliases of the one before."""
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, levels):
        aliases = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_small_alias_bomb_is_refused_by_the_manifest_reader_with_file_and_limit() -> None:
    # 10^5 leaves: quick for an unbounded reader to follow, past the per-document limit.
    bundle = bundles.load({"programs/bomb.yaml": alias_bomb(6)})
    assert not bundle.valid
    (problem,) = bundle.problems
    assert problem.file == "programs/bomb.yaml"
    # Manifests have no use for aliases: refused where the first one is used.
    assert "aliases are not supported in manifests" in problem.message
    assert problem.line == 2


def test_a_billion_laughs_is_refused_at_once() -> None:
    # About 550 bytes that would expand to 10^9 nodes.
    bomb = alias_bomb(10)
    assert len(bomb) < 600
    with pytest.raises(yamlfiles.LimitExceeded, match=r'YAML nodes(.|\n)*in "bomb\.yaml", line \d'):
        yamlfiles.load(bomb, "bomb.yaml")
    with pytest.raises(validating.PolicyValidationError, match="aliases are not supported"):
        validating.parse_yaml(bomb, "bomb.yaml")


def test_aliases_that_stay_small_still_work() -> None:
    document = yamlfiles.load(
        "defaults: &defaults {a: 1, b: 2}\none: {<<: *defaults, c: 3}\ntwo: *defaults\n", "x"
    )
    assert document == {
        "defaults": {"a": 1, "b": 2},
        "one": {"a": 1, "b": 2, "c": 3},
        "two": {"a": 1, "b": 2},
    }


def test_nodes_are_budgeted_over_every_file_of_one_read() -> None:
    # Each file alone is within the per-document limit; together they are not.
    limits = yamlfiles.Limits(document_nodes=1_000, total_nodes=600)
    per_file = alias_bomb(3)  # 248 nodes once its aliases are expanded
    budget = yamlfiles.Budget(limits)
    yamlfiles.load(per_file, "one.yaml", budget)
    yamlfiles.load(per_file, "two.yaml", budget)
    with pytest.raises(
        yamlfiles.LimitExceeded, match="more than 600 YAML nodes together"
    ) as raised:
        yamlfiles.load(per_file, "three.yaml", budget)
    assert raised.value.file == "three.yaml"


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(yamlfiles.LimitExceeded, match="refers to the collection it is in"):
        yamlfiles.load("a: &a [1, *a]\n", "loop.yaml")


def test_files_larger_than_the_limit_are_refused_before_parsing(tmp_path: Path) -> None:
    big = "items:\n" + "  - 1\n" * (yamlfiles.LIMITS.file_bytes // 6 + 10)
    with pytest.raises(yamlfiles.LimitExceeded, match=r"^big\.yaml: larger than .*1048576 bytes"):
        yamlfiles.load(big, "big.yaml")
    bundle = bundles.load({"big.yaml": big})
    assert "1048576 bytes" in bundle.problems[0].message
    # Reading from disk stops just past the limit, whatever the file's size.
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"#" * (5 * yamlfiles.LIMITS.file_bytes))
    assert len(yamlfiles.read(path)) == yamlfiles.LIMITS.file_bytes + 1


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(yamlfiles.LimitExceeded, match=r"nested deeper than 100(.|\n)*deep\.yaml"):
        yamlfiles.load(nested(5_000), "deep.yaml")
    yamlfiles.load(nested(50), "fine.yaml")


def test_numbers_too_long_to_convert_are_a_yaml_error_not_a_crash() -> None:
    with pytest.raises(yaml.YAMLError, match=r"long\.yaml"):
        yamlfiles.load("n: " + "9" * 10_000 + "\n", "long.yaml")


def test_text_that_is_not_utf8_names_the_file() -> None:
    bundle = bundles.load({"logo.yaml": b"\x89PNG\r\n\x1a\n\xff\xfe"})
    (problem,) = bundle.problems
    assert problem.file == "logo.yaml"
    assert "utf-8" in problem.message.lower()


def test_policy_files_from_disk_are_bounded(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(alias_bomb(10))
    with pytest.raises(validating.PolicyValidationError) as raised:
        validating.load_policies([tmp_path])
    (problem,) = raised.value.problems
    assert problem.file == str(tmp_path / "bomb.yaml")
    assert "aliases are not supported" in problem.message
