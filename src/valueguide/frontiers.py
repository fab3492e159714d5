"""Frontier sweeps: a method's (or a fine-tuning entry's) setting run at several values, each a method.

``frontiers: {vas: {token.beta: [0.5, 1, 2]}}`` adds, per value, a copy of the method ``vas`` with that
setting, named by the key, the setting's last part and the value (``vas-beta0.5``): the points of a
curve of gold reward against KL and against cost (report/frontier_plots.py). The base is a point of
its curve at its own value, and a value equal to the base's is the base itself: no job runs twice.
A key naming a ``finetune`` entry adds entries (``dpo-beta0.5``), each with a method that samples it
plainly (``dpo-beta0.5: {finetuned: dpo-beta0.5}``); such a key names the entry, not a method of that
name. Each setting is swept alone around the base, not as a grid. config.validate_config expands the
config, so the Snakefile's DAG and every command see the same methods.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

NAME = re.compile(r"[A-Za-z0-9_.-]+")  # a method's name: it names files and Snakemake wildcards


@dataclass(frozen=True)
class Point:
    value: Any
    method: str  # the method that runs this point
    settings: dict | None = None  # the method's settings, where the point adds the method
    entry: tuple[str, dict] | None = None  # (name, settings) of the finetune entry the point adds


@dataclass(frozen=True)
class Sweep:
    key: str  # the method (kind "method") or finetune entry (kind "finetune") swept
    kind: str
    setting: str  # dotted path inside the method or the entry
    points: tuple[Point, ...]

    def summary(self) -> dict:
        """What the report reads: which method runs each value (report slice, plots, claims)."""
        return {"key": self.key, "kind": self.kind, "setting": self.setting,
                "points": [{"value": p.value, "method": p.method} for p in self.points]}


def value_text(value) -> str:
    """A value as it appears in a name: 0.5, 128, 1 (for 1.0), 1e-05, true, null."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _get(settings: dict, parts: list[str]):
    for part in parts:
        if not isinstance(settings, dict) or part not in settings:
            return None
        settings = settings[part]
    return settings


def _with(settings: dict, parts: list[str], value) -> dict:
    out = copy.deepcopy(settings)
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _deref(root: dict, node: dict) -> dict:
    """``node`` with its ``$ref`` (a ``#/...`` pointer into ``root``) followed."""
    while isinstance(node, dict) and "$ref" in node:
        target = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _branches(root: dict, node: dict) -> list[dict]:
    """The object schemas ``node`` allows: itself, or each of its oneOf / anyOf alternatives, with the
    conditional parts of its allOf (``then`` / ``else``: the settings of one kind of finetune entry)."""
    node = _deref(root, node)
    alternatives = node.get("oneOf") or node.get("anyOf")
    if alternatives:
        return [b for alt in alternatives for b in _branches(root, alt)]
    conditional = [clause[key] for clause in node.get("allOf", []) for key in ("then", "else") if key in clause]
    return [node] + [b for part in conditional for b in _branches(root, part)]


def setting_paths(root: dict, node: dict, prefix: str = "") -> list[str]:
    """Every dotted leaf setting the schema ``node`` allows."""
    paths = []
    for branch in _branches(root, node):
        for name, child in branch.get("properties", {}).items():
            inner = setting_paths(root, child, f"{prefix}{name}.")
            paths += inner or [f"{prefix}{name}"]
    return list(dict.fromkeys(paths))


def _schemas(schema: dict) -> dict[str, dict]:
    """The schema of a method and of a finetune entry (where the schema has a finetune section)."""
    props = schema["properties"]
    out = {"method": props["generate"]["properties"]["methods"]["additionalProperties"]}
    if "finetune" in props:
        out["finetune"] = props["finetune"].get("additionalProperties", {})
    return out


def _plain_method(methods: dict, entry: str) -> str | None:
    """The method that samples the finetune entry ``entry`` plainly (its own name first), if any."""
    plain = [name for name, m in methods.items() if m == {"finetuned": entry}]
    return entry if entry in plain else (plain[0] if plain else None)


def plan_sweeps(config: dict, schema: dict) -> tuple[list[Sweep], list[str]]:
    """The sweeps of ``config["frontiers"]`` and the problems that stop them, each naming its key path."""
    methods, entries = config["generate"]["methods"], config.get("finetune") or {}
    schemas = _schemas(schema)
    sweeps, problems, made = [], [], {}
    for key, settings in (config.get("frontiers") or {}).items():
        kind = "finetune" if key in entries else "method" if key in methods else None
        if kind is None:
            problems.append(f"frontiers.{key}: names no method of generate.methods"
                            + (" and no finetune entry" if "finetune" in config else "")
                            + f" (methods: {', '.join(methods)})")
            continue
        known = setting_paths(schema, schemas[kind])
        for setting, values in settings.items():
            if setting not in known:
                what = "finetune entry" if kind == "finetune" else "method"
                problems.append(f"frontiers.{key}.{setting}: {setting!r} is no setting of a {what} "
                                f"(settings: {', '.join(known)})")
                continue
            sweep, found = _sweep(key, kind, setting, values, methods, entries, made)
            sweeps.append(sweep)
            problems += found
    return sweeps, problems


def _sweep(key: str, kind: str, setting: str, values: list, methods: dict, entries: dict,
           made: dict) -> tuple[Sweep, list[str]]:
    """One setting's sweep and its problems; ``made``: the methods and entries earlier sweeps add."""
    where, parts = f"frontiers.{key}.{setting}", setting.split(".")
    base = entries[key] if kind == "finetune" else methods[key]
    points, names, problems = [], set(), []
    for value in values:
        name = f"{key}-{parts[-1]}{value_text(value)}"
        if not NAME.fullmatch(name):
            problems.append(f"{where}: the value {value!r} cannot name a method (letters, digits, '_', '.', '-')")
        elif name in names:
            problems.append(f"{where}: the value {value!r} is given twice")
        else:
            names.add(name)
            if _get(base, parts) == value:
                point = _base_point(kind, key, name, value, methods)
            elif kind == "method":
                point = Point(value, name, settings=_with(base, parts, value))
            else:
                point = Point(value, name, settings={"finetuned": name}, entry=(name, _with(base, parts, value)))
            problems += _clashes(point, where, methods, entries, made)
            points.append(point)
    return Sweep(key, kind, setting, _with_base(points, kind, key, _get(base, parts), methods)), problems


def _with_base(points: list[Point], kind: str, key: str, value, methods: dict) -> tuple[Point, ...]:
    """The sweep's points with the base among them at its own value (where it sets one and a method runs
    it), in the order of the values where they are numbers."""
    base = key if kind == "method" else _plain_method(methods, key)
    if value is not None and base is not None and all(p.method != base for p in points):
        points = [Point(value, base), *points]
    if all(isinstance(p.value, (int, float)) and not isinstance(p.value, bool) for p in points):
        points = sorted(points, key=lambda p: p.value)
    return tuple(points)


def _base_point(kind: str, key: str, name: str, value, methods: dict) -> Point:
    """The point of a value equal to the base's own: the base method, or the method sampling the base
    entry plainly (one named ``name`` is added where the config has none)."""
    if kind == "method":
        return Point(value, key)
    plain = _plain_method(methods, key)
    return Point(value, plain) if plain else Point(value, name, settings={"finetuned": key})


def _clashes(point: Point, where: str, methods: dict, entries: dict, made: dict) -> list[str]:
    """A point's new method or entry must not differ from one of that name the config or another point has."""
    problems = []
    news = ([("method", point.method, point.settings, methods)] if point.settings is not None else []) + (
        [("finetune entry", *point.entry, entries)] if point.entry else [])
    for what, name, settings, existing in news:
        other = made.get((what, name), existing.get(name))
        if other is not None and other != settings:
            problems.append(f"{where}: the point {name!r} is already a {what} with other settings")
        made[(what, name)] = settings
    return problems


def expand(config: dict, sweeps: list[Sweep]) -> dict:
    """``config`` with every point's new method and finetune entry added (after the configured ones)."""
    out = copy.deepcopy(config)
    for sweep in sweeps:
        for point in sweep.points:
            if point.entry:
                out.setdefault("finetune", {})[point.entry[0]] = copy.deepcopy(point.entry[1])
            if point.settings is not None:
                out["generate"]["methods"][point.method] = copy.deepcopy(point.settings)
    return out


def frontier_summary(config: dict, schema: dict) -> list[dict]:
    """The sweeps of an already validated config, as the report reads them (empty without frontiers)."""
    return [sweep.summary() for sweep in plan_sweeps(config, schema)[0]]
