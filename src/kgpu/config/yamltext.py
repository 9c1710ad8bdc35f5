"""YAML (or JSON) text into Python values, bounded: the one reader of config files and fixtures.

Without the format's pydantic models, so a caller that only needs the text parsed (the simulated
node's fixture, read by every ``kgpu --simulate`` command) does not build them.

Example::

    load_yaml("version: v1\\nflags: {migStrategy: mixed}\\n", "my.yaml")   # {'version': 'v1', ...}
"""

from __future__ import annotations

from typing import Any

import yaml

from kgpu.config.limits import MAX_CONFIG_BYTES, MAX_YAML_ALIASES
from kgpu.errors import ConfigError


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a cap on aliases, so a small document cannot expand without bound."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (*name); write the values out")
        return super().compose_node(parent, index)


def load_yaml(text: str, source: str) -> Any:
    """The YAML (or JSON) document in ``text``; ConfigError naming ``source``, the line and the problem."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: {len(text)} characters, more than the limit of {MAX_CONFIG_BYTES} (1 MiB)")
    # A document without '*' has no alias to count: libyaml's parser reads it, several times faster than
    # the pure-Python one and to the same values. Aliases go through the counting loader, and so does a
    # document libyaml refuses, for the pure parser's error mark (the two place an error at the end of
    # the text differently).
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None and "*" not in text:
        try:
            return yaml.load(text, Loader=fast)
        except yaml.YAMLError:
            pass
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}:{where} not valid YAML: {str(problem)[:200]}") from None
