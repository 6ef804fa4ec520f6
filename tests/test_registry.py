"""The registry: case-insensitive names and aliases, no duplicates or partial entries, helpful errors."""

from __future__ import annotations

import pytest

from torchslim.registry import Registry


def test_registry_rejects_duplicates_case_insensitively():
    registry: Registry[int] = Registry("widget")
    registry.register("Alpha", 1, aliases=("a1",))
    with pytest.raises(ValueError, match="widget 'alpha' is registered twice"):
        registry.register("alpha", 2)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("A1", 3)  # clashes with an alias
    with pytest.raises(ValueError, match="alias 'a1' is registered twice"):
        registry.add_alias("a1", "alpha")
    assert registry.get("ALPHA") == 1 and registry.get("A1") == 1
    assert registry.canonical("a1") == "alpha"
    assert registry.list() == ["alpha"]


def test_failed_registration_leaves_no_partial_entry():
    registry: Registry[int] = Registry("widget")
    registry.register("alpha", 1, aliases=("a1",))
    with pytest.raises(ValueError, match="alias 'a1' is registered twice"):
        registry.register("beta", 2, aliases=("a1",))
    assert "beta" not in registry
    assert registry.list() == ["alpha"]


def test_registry_decorator_and_unknown_message():
    registry: Registry = Registry("thing")

    @registry.register("Widget")
    def widget():
        return 42

    assert registry.get("widget") is widget
    with pytest.raises(KeyError) as info:
        registry.get("widgit")
    assert "unknown thing 'widgit'; did you mean widget?" in info.value.args[0]
