"""Broker targets: templates of a message's key, id and payload fields (pure)."""

from __future__ import annotations

import re
import uuid

import pytest

from outbox.settings.template import TemplateError, parse

ID = uuid.UUID("6e789119-b6ce-49ce-92c9-ce64bca3373e")


def test_fields_are_filled_in() -> None:
    template = parse("orders.{key}.{payload.customer.region}.{id}")
    text = template.render(ID, "k1", {"customer": {"region": "eu"}})
    assert text == f"orders.k1.eu.{ID}"


@pytest.mark.parametrize(
    ("value", "text"), [("x", "x"), (7, "7"), (2.5, "2.5"), (True, "true"), (False, "false")]
)
def test_scalars_become_text(value: object, text: str) -> None:
    assert parse("t.{payload.v}").render(ID, None, {"v": value}) == f"t.{text}"


def test_doubled_braces_are_literal() -> None:
    template = parse("{{tag}}:{key}")
    assert template.render(ID, "k", None) == "{tag}:k"
    assert not template.constant


def test_a_constant_template_needs_nothing() -> None:
    template = parse("orders")
    assert template.constant
    assert not template.needs_payload
    assert template.render(ID, None) == "orders"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "must not be empty"),
        ("a.{nope}", "{nope} is not a field"),
        ("a.{payload}", "{payload} is not a field"),
        ("a.{payload.}", "is not a field"),
        ("a.{key", "unmatched '{' at character 3"),
        ("a}", "unmatched '}' at character 2"),
        ("x" * 1025, "over the limit of 1024"),
    ],
)
def test_a_bad_template_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse(text)


def test_a_missing_key_names_the_key() -> None:
    with pytest.raises(TemplateError) as info:
        parse("orders.{key}").render(ID, None)
    assert info.value.field == "key"
    assert "uses {key}" in info.value.problem


@pytest.mark.parametrize(
    ("payload", "what"),
    [({}, "missing"), ({"v": None}, "missing"), ({"v": {}}, "a JSON object"),
     ({"v": [1]}, "a JSON array"), ({"w": {"v": 1}}, "missing")],
)  # fmt: skip
def test_a_payload_field_must_be_a_scalar(payload: dict[str, object], what: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse("t.{payload.v}").render(ID, None, payload)
    assert info.value.field == "payload.v"
    assert info.value.problem.startswith(f"is {what},")
