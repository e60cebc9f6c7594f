"""Built-in tools the LLM may call, with their OpenAI function schemas.

Owns: the tool registry (`TOOLS`), the JSON schemas handed to the model
(`tool_schemas()`), and running one call (`run_tool()`): parsing the model's JSON
arguments, executing the tool, and turning any failure into a short error text the model
can read (a bad tool call never raises into the worker).

Tools:
- `current_time(timezone?)`: local date and time, optionally in an IANA zone (zoneinfo).
- `calculator(expression)`: safe arithmetic by walking the AST (no eval): numbers,
  + - * / // % **, unary +/-, parentheses, a few math functions and constants; exponents,
  input length and result size are bounded.
- `remember(key, value)` / `recall(key?)`: the session's memory, kept in the request's
  context under `memory.<key>`; `remember` emits a `ContextUpdate` the orchestrator saves.

Each tool says whether it has side effects (`Tool.side_effects`: it changes something outside
the reply, such as the user's saved memory). A preemptive reply (started before the user's
turn has ended) runs only tools without; it stops at the first call of one with.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.model import ContextUpdate

log = logging.getLogger(__name__)

MEMORY_PREFIX = "memory."
MAX_EXPRESSION_CHARS = 300
MAX_EXPONENT = 1000
MAX_RESULT_DIGITS = 1000
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 1000


class ToolError(Exception):
    """A tool could not do what was asked; the message goes back to the model."""


@dataclass(slots=True)
class ToolResult:
    content: str  # what the model reads as the tool message
    updates: list[ContextUpdate] = field(default_factory=list)
    ok: bool = True


@dataclass(slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any], dict[str, Any]], ToolResult]  # (arguments, context) -> result
    side_effects: bool  # it changes something beyond the reply (never run for an unfinished turn)

    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


# ---------------------------------------------------------------- calculator

_BIN_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPS: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _factorial(n: Any) -> int:
    if not float(n).is_integer() or n < 0 or n > 170:
        raise ToolError("factorial needs a whole number from 0 to 170")
    return math.factorial(int(n))


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "ln": math.log,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "degrees": math.degrees,
    "radians": math.radians,
    "hypot": math.hypot,
    "min": min,
    "max": max,
    "factorial": _factorial,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
_REPLACEMENTS = {"^": "**", "×": "*", "÷": "/", "−": "-", "–": "-"}


def _check_size(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_DIGITS * 3.33:
        raise ToolError("result is too large")
    if isinstance(value, float) and math.isnan(value):
        raise ToolError("result is not a number")
    if isinstance(value, complex):
        raise ToolError("result is not a real number")
    return value


def _pow(base: Any, exp: Any) -> Any:
    if abs(exp) > MAX_EXPONENT:
        raise ToolError(f"exponent too large (limit {MAX_EXPONENT})")
    if (
        isinstance(base, int)
        and isinstance(exp, int)
        and exp > 0
        and abs(base) > 1
        and exp * math.log10(abs(base)) > MAX_RESULT_DIGITS
    ):
        raise ToolError("result is too large")
    return base**exp


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ToolError(f"unsupported value: {node.value!r}")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN_OPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _check_size(_pow(left, right))
        return _check_size(_BIN_OPS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
        return _UNARY_OPS[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else "?"
            raise ToolError(f"unknown function: {name}")
        if node.keywords or not 1 <= len(node.args) <= 8:
            raise ToolError(f"bad arguments to {node.func.id}")
        return _check_size(_FUNCTIONS[node.func.id](*(_eval(a) for a in node.args)))
    if isinstance(node, ast.Name):
        raise ToolError(f"unknown name: {node.id}")
    raise ToolError(f"unsupported syntax: {type(node).__name__}")


def format_number(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            raise ToolError("result is infinite")
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".12g")
    return str(value)


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression safely; returns the result as text or raises ToolError."""
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("empty expression")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression too long (limit {MAX_EXPRESSION_CHARS} characters)")
    expr = expression.strip().rstrip("=").strip()
    for old, new in _REPLACEMENTS.items():
        expr = expr.replace(old, new)
    expr = re.sub(r"(?<=\d),(?=\d{3}\b)", "", expr)  # 1,000,000 -> 1000000
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from exc
    try:
        return format_number(_eval(tree))
    except ZeroDivisionError as exc:
        raise ToolError("division by zero") from exc
    except OverflowError as exc:
        raise ToolError("result is too large") from exc
    except (ValueError, TypeError, RecursionError) as exc:
        raise ToolError(f"math error: {exc}") from exc


def _calculator(args: dict[str, Any], context: dict[str, Any]) -> ToolResult:
    expression = args.get("expression")
    if not isinstance(expression, str):
        raise ToolError("calculator needs an 'expression' string")
    return ToolResult(f"{expression} = {calculate(expression)}")


# ---------------------------------------------------------------- time


def current_time(timezone: str | None = None, now: datetime | None = None) -> str:
    if timezone:
        try:
            tz = ZoneInfo(timezone.strip())
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ToolError(f"unknown time zone: {timezone!r} (use an IANA name like Europe/Paris)") from exc
        moment = (now or datetime.now(tz)).astimezone(tz)
        zone = timezone.strip()
    else:
        moment = (now or datetime.now()).astimezone()
        zone = moment.tzname() or "local time"
    offset = moment.strftime("%z")
    offset = f"UTC{offset[:3]}:{offset[3:]}" if offset else "UTC"
    return f"{moment:%A %d %B %Y, %H:%M} ({zone}, {offset})"


def _current_time(args: dict[str, Any], context: dict[str, Any]) -> ToolResult:
    tz = args.get("timezone") or context.get(f"{MEMORY_PREFIX}timezone") or None
    if tz is not None and not isinstance(tz, str):
        raise ToolError("timezone must be a string")
    return ToolResult(current_time(tz))


# ---------------------------------------------------------------- memory


def memory_key(key: Any) -> str:
    if not isinstance(key, str) or not key.strip():
        raise ToolError("key must be a non-empty string")
    norm = re.sub(r"\s+", "_", key.strip().lower())
    if len(norm) > MAX_KEY_CHARS:
        raise ToolError(f"key too long (limit {MAX_KEY_CHARS} characters)")
    return norm


def _remember(args: dict[str, Any], context: dict[str, Any]) -> ToolResult:
    key = memory_key(args.get("key"))
    value = args.get("value")
    if value is None:
        raise ToolError("value is required")
    value = value if isinstance(value, str) else json.dumps(value)
    if len(value) > MAX_VALUE_CHARS:
        raise ToolError(f"value too long (limit {MAX_VALUE_CHARS} characters)")
    full = MEMORY_PREFIX + key
    context[full] = value  # later tool calls in the same reply see it
    return ToolResult(f"Remembered {key}: {value}", updates=[ContextUpdate(key=full, value=value)])


def _recall(args: dict[str, Any], context: dict[str, Any]) -> ToolResult:
    known = sorted(k[len(MEMORY_PREFIX) :] for k in context if k.startswith(MEMORY_PREFIX))
    if not args.get("key"):
        return ToolResult(
            "Remembered: " + ", ".join(f"{k}: {context[MEMORY_PREFIX + k]}" for k in known)
            if known
            else "Nothing remembered yet."
        )
    key = memory_key(args["key"])
    if MEMORY_PREFIX + key in context:
        return ToolResult(f"{key}: {context[MEMORY_PREFIX + key]}")
    return ToolResult(
        f"Nothing remembered for {key}." + (f" Known keys: {', '.join(known)}." if known else "")
    )


# ---------------------------------------------------------------- registry

TOOLS: dict[str, Tool] = {
    t.name: t
    for t in [
        Tool(
            "current_time",
            "Get the current date and time, optionally in a given time zone.",
            {
                "type": "object",
                "properties": {
                    "timezone": {
                        "type": "string",
                        "description": "IANA time zone, e.g. Europe/Paris. Optional.",
                    }
                },
                "required": [],
            },
            _current_time,
            side_effects=False,
        ),
        Tool(
            "calculator",
            "Evaluate an arithmetic expression exactly, e.g. '17 * 23' or 'sqrt(2) / 3'. "
            "Supports + - * / // % ** and sqrt, log, sin, cos, round, min, max, pi.",
            {
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "The arithmetic expression."}},
                "required": ["expression"],
            },
            _calculator,
            side_effects=False,
        ),
        Tool(
            "remember",
            "Remember a fact about the user for later in the conversation.",
            {
                "type": "object",
                "properties": {
                    "key": {
                        "type": "string",
                        "description": "Short name of the fact, e.g. 'favourite_colour'.",
                    },
                    "value": {"type": "string", "description": "The fact to remember."},
                },
                "required": ["key", "value"],
            },
            _remember,
            side_effects=True,
        ),
        Tool(
            "recall",
            "Recall a fact remembered earlier; without a key, list everything remembered.",
            {
                "type": "object",
                "properties": {"key": {"type": "string", "description": "Name of the fact. Optional."}},
                "required": [],
            },
            _recall,
            side_effects=False,
        ),
    ]
}


def tool_schemas(enabled: list[str] | None = None) -> list[dict[str, Any]]:
    """OpenAI `tools=` entries for the enabled tools (all built-ins when `enabled` is None)."""
    names = list(TOOLS) if enabled is None else [n for n in enabled if n in TOOLS]
    return [TOOLS[n].schema() for n in names]


def has_side_effects(name: str) -> bool:
    """Whether a call of tool `name` may change anything beyond the reply (an unknown name: yes)."""
    tool = TOOLS.get(name)
    return tool is None or tool.side_effects


def parse_arguments(arguments: str | dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if not arguments or not arguments.strip():
        return {}
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise ToolError(f"arguments are not valid JSON: {arguments[:200]!r}") from exc
    if not isinstance(parsed, dict):
        raise ToolError("arguments must be a JSON object")
    return parsed


def run_tool(
    name: str,
    arguments: str | dict[str, Any] | None,
    context: dict[str, Any],
    enabled: list[str] | None = None,
) -> ToolResult:
    """Run one tool call. Errors become a ToolResult(ok=False) whose text explains them to the model.

    `context` is the request's context: `remember` writes into it (so a later `recall` in
    the same reply sees the value) and returns the matching ContextUpdate.
    """
    tool = TOOLS.get(name)
    if tool is None or (enabled is not None and name not in enabled):
        return ToolResult(f"Error: unknown tool {name!r}", ok=False)
    try:
        return tool.run(parse_arguments(arguments), context)
    except ToolError as exc:
        return ToolResult(f"Error: {exc}", ok=False)
    except Exception as exc:  # a bug in a tool must not take the reply down
        log.exception("tool %s failed", name)
        return ToolResult(f"Error: the {name} tool failed ({type(exc).__name__})", ok=False)
