"""Typed method parameters: each method declares a pydantic model next to its code; one helper validates.

A run's method parameters live in ``config.yaml`` under ``method:`` (``method: {name: hardened, mu: 1.0, ...}``;
runs written with the older ``baseline:`` section still load). Unknown or ill-typed keys are rejected with the key
named. A field may declare a search range (:func:`search`) that ``deepobf tune`` explores; the listing of
``deepobf train --method-help NAME`` shows every field's type, default, range and help.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import ConfigError


class MethodParams(BaseModel):
    """Base of every method's parameters: no unknown keys, values checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NoParams(MethodParams):
    """A method without parameters of its own."""


def search(low: float | None = None, high: float | None = None, log: bool = False, step: float | None = None,
           choices: list[Any] | None = None) -> dict[str, Any]:
    """The ``json_schema_extra`` of a tunable field: a float/int range (``log`` for log-uniform) or ``choices``."""
    if choices is not None:
        return {"search": {"choices": list(choices)}}
    if low is None or high is None or not low < high:
        raise ValueError(f"a search range needs low < high, got {low}, {high}")
    return {"search": {"low": low, "high": high, "log": log, **({"step": step} if step is not None else {})}}


def param(default: Any, help: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
          lt: float | None = None, tune: dict[str, Any] | None = None) -> Any:
    """A documented parameter field with optional bounds and search range."""
    return Field(default, description=help, ge=ge, gt=gt, le=le, lt=lt, json_schema_extra=tune)


def validate_params(model: type[MethodParams], raw: dict[str, Any] | None, method: str,
                    where: str = "config.yaml method") -> MethodParams:
    """``raw`` checked against ``model`` (defaults filled); ConfigError naming the first bad key."""
    try:
        return model.model_validate(dict(raw or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "?"
        if first["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields) or "none"
            raise ConfigError(f"{where}.{key}: {method} takes no parameter '{key}' (known: {known})") from None
        raise ConfigError(f"{where}.{key}: {first['msg']} (got {first.get('input')!r})") from None


def search_space(model: type[MethodParams]) -> dict[str, dict[str, Any]]:
    """The fields of ``model`` that declare a search range."""
    out = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if "search" in extra:
            out[name] = {"type": _type_name(info.annotation), **extra["search"]}
    return out


def _type_name(annotation: Any) -> str:
    if getattr(annotation, "__origin__", None) is Literal:
        return "one of " + ", ".join(repr(a) for a in annotation.__args__)
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def describe_params(model: type[MethodParams]) -> list[dict[str, Any]]:
    """Every field: name, type, default, help, bounds and search range (for listings)."""
    rows = []
    for name, info in model.model_fields.items():
        bounds = {}
        for item in info.metadata:
            for key in ("ge", "gt", "le", "lt"):
                if getattr(item, key, None) is not None:
                    bounds[key] = getattr(item, key)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        rows.append({"name": name, "type": _type_name(info.annotation), "default": info.default,
                     "help": info.description or "", "bounds": bounds, "search": extra.get("search")})
    return rows


def format_params(method: str, summary: str, model: type[MethodParams]) -> str:
    """The ``--method-help`` listing of one method."""
    rows = describe_params(model)
    lines = [f"{method}: {summary}", ""]
    if not rows:
        return "\n".join(lines + ["(no parameters of its own; see the config sections: deepobf train -h)"])
    lines.append("parameters (--set method.NAME=VALUE; stored in config.yaml under method:):")
    for row in rows:
        limits = " ".join(f"{'>=' if k == 'ge' else '>' if k == 'gt' else '<=' if k == 'le' else '<'} {v}"
                          for k, v in row["bounds"].items())
        tune = ""
        if row["search"]:
            s = row["search"]
            tune = (f"; tune: {s['choices']}" if "choices" in s else
                    f"; tune: {s['low']}..{s['high']}{' (log)' if s.get('log') else ''}")
        lines.append(f"  {row['name']} ({row['type']}, default {row['default']!r}{', ' + limits if limits else ''}"
                     f"{tune})")
        if row["help"]:
            lines.append(f"      {row['help']}")
    return "\n".join(lines)
