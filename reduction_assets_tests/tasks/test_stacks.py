"""A stack's group travels as a typed value: its fields are never read back from a joined key."""

from reduction_assets.tasks.stacks import StackGroup


def test_a_plain_group_keeps_the_catalog_key_it_always_had():
    assert StackGroup("NGC 253 field", "rp", "1x1").key == "NGC 253 field|rp|1x1"


def test_groups_whose_fields_hold_a_bar_have_distinct_keys():
    one = StackGroup("a|b", "c", "1x1")
    other = StackGroup("a", "b|c", "1x1")
    assert one.key != other.key
    assert one.key == '["a|b", "c", "1x1"]'


def test_a_group_sorts_by_its_fields():
    groups = [StackGroup("b", "rp", "1x1"), StackGroup("a", "rp", "2x2"), StackGroup("a", "gp", "1x1")]
    assert [g.target + g.filter for g in sorted(groups)] == ["agp", "arp", "brp"]
