"""The LLM's built-in tools: the calculator's answers and its refusal of anything that is not
arithmetic, the clock (with time zones), remember/recall on the session context, and
that a bad call comes back as text for the model instead of an exception."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from services.llm.tools import (
    MEMORY_PREFIX,
    TOOLS,
    ToolError,
    calculate,
    current_time,
    run_tool,
    tool_schemas,
)
from shared.model import ContextUpdate


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("17 * 23", "391"),
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),
        ("17 % 5", "2"),
        ("2 ** 10", "1024"),
        ("2 ^ 10", "1024"),  # what people (and small models) write for powers
        ("-3 ** 2", "-9"),
        ("+4 - -4", "8"),
        ("0.1 + 0.2", "0.3"),
        ("1,000,000 * 3", "3000000"),
        ("6 × 7 ÷ 2", "21"),
        ("sqrt(16) + abs(-2)", "6"),
        ("round(pi, 3)", "3.142"),
        ("max(3, 9, 4) - min(3, 9, 4)", "6"),
        ("log10(1000)", "3"),
        ("factorial(5)", "120"),
        ("2 ** -1", "0.5"),
        ("12 * 12 =", "144"),
    ],
)
def test_calculator_answers(expression, expected):
    assert calculate(expression) == expected


def test_calculator_float_results_are_readable():
    assert calculate("1 / 3") == "0.333333333333"
    assert math.isclose(float(calculate("sin(pi / 6)")), 0.5)


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('echo hi')",
        "open('/etc/passwd').read()",
        "().__class__.__bases__[0].__subclasses__()",
        "x + 1",
        "lambda: 1",
        "[1, 2, 3]",
        "'a' * 3",
        "True + 1",
        "1 if 1 else 2",
        "eval('1')",
        "abs(x=1)",
        "9 ** 9 ** 9",
        "2 ** 100000",
        "10 ** 5000",
        "factorial(100000)",
        "1 << 100000",
        "(" * 200 + "1" + ")" * 200,
        "",
        "   ",
        "1 / 0",
        "5 % 0",
        "sqrt(-1)",
        "(-8) ** 0.5",
        "1e308 * 10",
        "exp(1000)",
        "2 +",
    ],
)
def test_calculator_refuses_what_is_not_safe_arithmetic(expression):
    with pytest.raises(ToolError):
        calculate(expression)


def test_calculator_through_run_tool():
    result = run_tool("calculator", json.dumps({"expression": "6 * 7"}), {})
    assert result.ok and result.content == "6 * 7 = 42" and result.updates == []
    bad = run_tool("calculator", json.dumps({"expression": "import os"}), {})
    assert not bad.ok and bad.content.startswith("Error:")


def test_current_time_in_a_zone():
    moment = datetime(2025, 1, 15, 12, 30, tzinfo=UTC)
    assert (
        current_time("Asia/Tokyo", now=moment) == "Wednesday 15 January 2025, 21:30 (Asia/Tokyo, UTC+09:00)"
    )
    assert current_time("America/New_York", now=moment).startswith("Wednesday 15 January 2025, 07:30")


def test_current_time_now_and_bad_zone():
    text = run_tool("current_time", "{}", {}).content
    assert str(datetime.now().year) in text
    assert run_tool("current_time", json.dumps({"timezone": "Europe/Paris"}), {}).ok
    bad = run_tool("current_time", json.dumps({"timezone": "Mars/Olympus_Mons"}), {})
    assert not bad.ok and "unknown time zone" in bad.content
    assert not run_tool("current_time", json.dumps({"timezone": "../../etc/passwd"}), {}).ok


def test_current_time_uses_a_remembered_timezone():
    text = run_tool("current_time", "{}", {MEMORY_PREFIX + "timezone": "Asia/Tokyo"}).content
    assert "Asia/Tokyo" in text


def test_remember_then_recall():
    context: dict = {"other": "kept"}
    result = run_tool("remember", json.dumps({"key": "Favourite colour", "value": "blue"}), context)
    assert result.ok
    assert result.updates == [ContextUpdate(key="memory.favourite_colour", value="blue")]
    assert context["memory.favourite_colour"] == "blue"  # a later call in the same reply sees it
    assert (
        run_tool("recall", json.dumps({"key": "favourite colour"}), context).content
        == "favourite_colour: blue"
    )
    assert "favourite_colour: blue" in run_tool("recall", "{}", context).content
    missing = run_tool("recall", json.dumps({"key": "dog's name"}), context)
    assert "Nothing remembered" in missing.content and "favourite_colour" in missing.content
    assert context["other"] == "kept"


def test_recall_with_nothing_remembered():
    assert run_tool("recall", "{}", {}).content == "Nothing remembered yet."


@pytest.mark.parametrize(
    "arguments",
    [
        {"key": "", "value": "x"},
        {"key": "k"},
        {"key": "k" * 100, "value": "x"},
        {"key": "k", "value": "v" * 5000},
    ],
)
def test_remember_rejects_bad_input(arguments):
    context: dict = {}
    result = run_tool("remember", json.dumps(arguments), context)
    assert not result.ok and result.updates == [] and context == {}


def test_bad_calls_come_back_as_text():
    assert run_tool("no_such_tool", "{}", {}).content == "Error: unknown tool 'no_such_tool'"
    assert "not valid JSON" in run_tool("calculator", "{not json", {}).content
    assert "JSON object" in run_tool("calculator", "[1]", {}).content
    assert not run_tool("calculator", "{}", {}).ok
    # a tool turned off in settings cannot be called even if the model names it
    assert not run_tool("remember", json.dumps({"key": "a", "value": "b"}), {}, enabled=["calculator"]).ok


def test_schemas_are_openai_function_tools():
    schemas = tool_schemas()
    assert [s["function"]["name"] for s in schemas] == list(TOOLS)
    for schema in schemas:
        assert schema["type"] == "function"
        params = schema["function"]["parameters"]
        assert params["type"] == "object" and set(params["required"]) <= set(params["properties"])
        json.dumps(schema)
    assert [s["function"]["name"] for s in tool_schemas(["calculator", "nope"])] == ["calculator"]
