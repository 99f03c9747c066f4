"""Prompt syntax: what A1111 cannot read is a clear error, not a crash."""

import pytest

from curator.generation.prompt_attention import PromptSyntaxError, parse_prompt_attention
from curator.generation.prompt_schedule import prompt_schedule


def test_unreadable_weight_is_a_syntax_error():
    with pytest.raises(PromptSyntaxError, match="1.2.3"):
        parse_prompt_attention("(a:1.2.3)")


def test_empty_alternative_is_a_syntax_error():
    with pytest.raises(PromptSyntaxError, match="empty alternative"):
        prompt_schedule("[a|]", 4)


def test_fraction_and_absolute_switch_steps():
    assert prompt_schedule("[a:b:0.5]", 20) == [(10, "a"), (20, "b")]
    assert prompt_schedule("[a:b:10]", 20) == [(10, "a"), (20, "b")]
    assert prompt_schedule("x [a::0.5]", 4) == [(2, "x a"), (4, "x ")]
    assert prompt_schedule("[a|b]", 3) == [(1, "a"), (2, "b"), (3, "a")]
