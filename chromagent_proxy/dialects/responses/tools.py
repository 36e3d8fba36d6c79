"""A Responses request's tools as the upstream sees them, and its tool choice.

Namespace tools are flattened to ``<namespace>__<name>`` (upstreams know no namespaces) and
``Tools.split`` maps a call's flat name back; hosted tools run only on OpenAI itself.
"""

from __future__ import annotations

from typing import Any

from chromagent_proxy.core import ir
from chromagent_proxy.core.errors import InvalidRequest, UnsupportedFeature
from chromagent_proxy.dialects.responses.request import HOSTED_SEARCH, NS_SEP, ResponsesRequest


class Tools:
    """The request's tools as the upstream sees them, and the way back for names."""

    __slots__ = ("dropped", "flat", "namespaces")

    def __init__(self) -> None:
        self.flat: list[ir.Tool] = []
        self.namespaces: dict[str, tuple[str, str]] = {}  # flat name → (namespace, name)
        self.dropped: list[str] = []  # hosted tools left out (said in a response header)

    def split(self, flat_name: str) -> tuple[str, str | None]:
        """(name, namespace) of a call the upstream made by flat name."""
        hit = self.namespaces.get(flat_name)
        return (hit[1], hit[0]) if hit is not None else (flat_name, None)


def read_tools(req: ResponsesRequest, refuse_hosted: bool) -> Tools:
    out = Tools()
    for i, tool in enumerate(req.tools or ()):
        kind = tool.get("type")
        if kind == "function":
            out.flat.append(_function(tool, f"tools[{i}]"))
        elif kind == "namespace":
            ns = str(tool.get("name") or "")
            for j, inner in enumerate(tool.get("tools") or ()):
                fn = (
                    _function(inner, f"tools[{i}].tools[{j}]")
                    if inner.get("type", "function") == "function"
                    else _custom(inner, f"tools[{i}].tools[{j}]")
                )
                flat = f"{ns}{NS_SEP}{fn.name}"
                out.namespaces[flat] = (ns, fn.name)
                fn.name = flat
                out.flat.append(fn)
        elif kind == "custom":
            out.flat.append(_custom(tool, f"tools[{i}]"))
        elif kind in HOSTED_SEARCH and not refuse_hosted:
            out.dropped.append(str(kind))
        else:
            raise UnsupportedFeature(
                f"tool type {kind!r} runs only on OpenAI itself; this backend cannot run it"
                + (' (responses.hostedTools is "refuse")' if kind in HOSTED_SEARCH else ""),
                param=f"tools[{i}].type",
            )
    return out


def _function(tool: dict[str, Any], param: str) -> ir.Tool:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("a function tool needs a name", param=f"{param}.name")
    params = tool.get("parameters")
    return ir.Tool(
        name,
        tool.get("description"),
        params if isinstance(params, dict) else None,
        tool.get("strict") if isinstance(tool.get("strict"), bool) else None,
    )


def _custom(tool: dict[str, Any], param: str) -> ir.Tool:
    # A free-form tool becomes a function of one string; a grammar cannot be enforced.
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("a custom tool needs a name", param=f"{param}.name")
    schema = {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "the tool's raw input"}},
        "required": ["input"],
    }
    return ir.Tool(name, tool.get("description"), schema)


def tool_choice(req: ResponsesRequest, tools: Tools) -> ir.ToolChoice | None:
    choice = req.tool_choice
    parallel = req.parallel_tool_calls
    if choice is None:
        return ir.ToolChoice(parallel=parallel) if parallel is not None else None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequest(
                "tool_choice must be auto, none, required or an object", param="tool_choice"
            )
        return ir.ToolChoice(choice, parallel=parallel)  # type: ignore[arg-type]
    kind = choice.get("type")
    if kind in ("function", "custom"):
        name = str(choice.get("name") or "")
        flat = next((f for f, (_, n) in tools.namespaces.items() if n == name), name)
        return ir.ToolChoice("tool", name=flat, parallel=parallel)
    if kind == "allowed_tools":
        allowed = {str(t.get("name")) for t in choice.get("tools") or () if isinstance(t, dict)}
        tools.flat = [t for t in tools.flat if tools.split(t.name)[0] in allowed]
        mode = "required" if choice.get("mode") == "required" else "auto"
        return ir.ToolChoice(mode, parallel=parallel)  # type: ignore[arg-type]
    raise UnsupportedFeature(
        f"tool_choice type {kind!r} forces a tool this backend cannot run", param="tool_choice"
    )
