"""Summarise a mutmut 3 run (``make mutation``): counts, the score with and without message-only mutants, and the
mutants that were not killed.

Usage, in the folder where ``mutmut run`` ran (the scratch copy of ``make mutation``)::

    python scripts/mutation_summary.py MODULE        # MODULE as in MUTATION, e.g. bounds or attacks/deepfool

A mutant is *message-only* when the only thing it changes is text that can end up in nothing but an error or
warning message: a string (or f-string) inside a ``raise`` statement or a ``warn(...)`` call, or replaced by
``None`` there; a string passed as the *name* argument of a validator that uses it only in its messages
(``real_scalar(x, "name")``, ``integer_at_least``, ``as_array``, ...), or such an argument dropped where the
validator has a default name; a piece of a message assigned to ``hint``; the default of a parameter that
only names an argument in messages.  The decision is made on the syntax trees of the original and the mutated
function, which mutmut keeps side by side in ``mutants/src``.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

#: callables whose arguments after the first are only names printed in error messages
VALIDATORS = {"real_scalar", "integer_at_least", "as_array", "_as_nonneg_array", "_check_quantile", "_as_numpy",
              "check_seed"}
#: the validators among them whose name argument has a default (dropping it is message-only; elsewhere a TypeError)
DEFAULT_NAMED = {"_check_quantile", "check_seed"}
#: keyword arguments that only name things in messages
MESSAGE_KEYWORDS = {"name", "who", "label"}
#: (function, parameter) pairs whose default only names the argument in messages
MESSAGE_PARAMETERS = {("_check_quantile", "name")}
#: variables that hold a piece of a message
MESSAGE_VARIABLES = {"hint", "msg"}


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def _is_text(node: object) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def _differences(a: object, b: object, ancestors: list[ast.AST]) -> list[tuple[object, object, list[ast.AST]]]:
    """The smallest differing nodes of two syntax trees, each with the chain of its ancestors in ``a``."""
    if type(a) is not type(b):
        return [(a, b, ancestors)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [(a, b, ancestors)]
        return [d for x, y in zip(a, b, strict=True) for d in _differences(x, y, ancestors)]
    if not isinstance(a, ast.AST):
        return [] if a == b else [(a, b, ancestors)]
    assert isinstance(b, ast.AST)
    out: list[tuple[object, object, list[ast.AST]]] = []
    for field in a._fields:
        va, vb = getattr(a, field, None), getattr(b, field, None)
        if isinstance(va, (list, ast.AST)) or isinstance(vb, (list, ast.AST)):
            diffs = _differences(va, vb, [*ancestors, a])
            if isinstance(va, list) and any(x is va for x, _, _ in diffs):  # lists of different lengths
                return [(a, b, ancestors)]
            out += diffs
        elif va != vb and field != "kind":
            return [(a, b, ancestors)]
    return out


def _message_only(a: object, b: object, ancestors: list[ast.AST], function: str) -> bool:
    if _is_text(a) and (_is_text(b) or (isinstance(b, ast.Constant) and b.value is None)):
        for node in ancestors:
            if isinstance(node, ast.Raise) or (isinstance(node, ast.Call) and _call_name(node) == "warn"):
                return True
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in MESSAGE_VARIABLES
                                                    for t in node.targets):
                return True
        parent = ancestors[-1] if ancestors else None
        if isinstance(parent, ast.keyword):
            return parent.arg in MESSAGE_KEYWORDS
        if isinstance(parent, ast.Call) and _call_name(parent) in VALIDATORS:
            return any(arg is a for arg in parent.args[1:])
        if isinstance(parent, ast.arguments):
            params = parent.args[len(parent.args) - len(parent.defaults):]
            return any(d is a and (function, p.arg) in MESSAGE_PARAMETERS for p, d in zip(params, parent.defaults,
                                                                                          strict=True))
        return False
    if isinstance(a, ast.Call) and isinstance(b, ast.Call) and _call_name(a) in DEFAULT_NAMED:
        if len(a.args) == len(b.args) + 1:  # the name argument dropped
            kept = {ast.dump(y) for y in b.args}
            removed = [x for x in a.args if ast.dump(x) not in kept]
            return len(removed) == 1 and _is_text(removed[0])
    return False


def summarise(module: str, root: Path = Path(".")) -> dict:
    source = root / "mutants" / "src" / "advbound" / f"{module}.py"
    functions = {node.name: node for node in ast.walk(ast.parse(source.read_text()))
                 if isinstance(node, ast.FunctionDef) and "__mutmut_" in node.name}
    listing = subprocess.run([str(Path(sys.executable).parent / "mutmut"), "results", "--all", "true"], cwd=root,
                             capture_output=True, text=True, check=True).stdout
    status = dict(re.findall(r"^\s*(\S+): (.+?)\s*$", listing, flags=re.MULTILINE))
    prefix = "advbound." + module.replace("/", ".") + "."
    rows = []
    for name, node in sorted(functions.items()):
        if name.endswith("__mutmut_orig"):
            continue
        base = name.rsplit("__mutmut_", 1)[0]
        orig = functions[base + "__mutmut_orig"]
        diffs = (_differences(orig.args, node.args, [orig])
                 + _differences(orig.body, node.body, [orig]))
        message = bool(diffs) and all(_message_only(a, b, anc, base[2:]) for a, b, anc in diffs)
        rows.append((prefix + name, status.get(prefix + name, "not run"), message))
    killed = sum(st == "killed" for _, st, _ in rows)
    message = sum(m for _, _, m in rows)
    killed_message = sum(m and st == "killed" for _, st, m in rows)
    return {
        "module": module, "mutants": len(rows), "killed": killed, "message_only": message,
        "message_only_killed": killed_message,
        "score": round(100 * killed / len(rows), 1),
        "score_without_message_only": round(100 * (killed - killed_message) / (len(rows) - message), 1),
        "not_killed": [f"{name}: {st}{' (message only)' if m else ''}" for name, st, m in rows if st != "killed"],
    }


if __name__ == "__main__":
    print(json.dumps(summarise(sys.argv[1]), indent=1))
