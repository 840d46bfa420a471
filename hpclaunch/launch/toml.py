"""Reading and writing the small TOML files of profiles and site-configs.

Reading uses the standard library's ``tomllib`` (``tomli`` on Python 3.10). Writing
needs only flat tables of strings, numbers, booleans and lists of strings, so a
few lines here replace a dependency.
"""

import json
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError


def load(path):
    """The table in the TOML file at ``path``."""
    with open(path, "rb") as f:
        return tomllib.load(f)


def loads(text):
    return tomllib.loads(text)


def dumps(table, header=""):
    """TOML text for a flat ``table``; keys whose value is None are left out."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    if lines:
        lines.append("")
    for key, value in table.items():
        if value is None:
            continue
        lines.append(f"{key} = {_value(key, value)}")
    return "\n".join(lines) + "\n"


def _value(key, value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        return "[\n" + "".join(f"    {_value(key, item)},\n" for item in value) + "]"
    raise TypeError(f"cannot write {key} = {value!r} to TOML: only strings, numbers, "
                    "booleans and lists of them")
