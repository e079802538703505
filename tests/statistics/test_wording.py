"""The package's list wording: every item said once, in order, joined as a sentence lists them."""

import re

from hypothesis import given
from hypothesis import strategies as st

from advspatial.statistics.wording import listed

#: names as the sentences list them (settings, regions, explainers): no comma and no " and " inside
names = st.text(alphabet="bcxyz_ ", min_size=1, max_size=8).filter(lambda s: s.strip() == s and s)


def test_listed_joins_the_last_two_with_and_and_the_rest_with_commas():
    assert listed([]) == ""
    assert listed(["gate_n"]) == "gate_n"
    assert listed(["gate_n", "permutations"]) == "gate_n and permutations"
    assert listed(["a", "b", "c", "2 more"]) == "a, b, c and 2 more"


@given(st.lists(names, min_size=1, max_size=6))
def test_listed_says_every_item_once_in_order(items):
    said = listed(items)
    assert re.split(r", | and ", said) == items
    assert said.count(" and ") == (len(items) > 1)
