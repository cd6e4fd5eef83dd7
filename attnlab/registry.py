"""Named registries: one small helper behind every ``register_x`` / ``get_x`` pair in attnlab.

    NORMS: Registry[NormFactory] = Registry("norm")

    @NORMS.register("rmsnorm")            # decorator form
    class RMSNorm(nn.Module): ...

    NORMS.register("layernorm", LayerNorm) # call form; returns the object
    NORMS.get("rmsnrm")                    # ConfigError: unknown norm 'rmsnrm' (did you mean 'rmsnorm'?);
                                           #   known: layernorm, rmsnorm
    "rmsnorm" in NORMS, len(NORMS), NORMS.names()

A name is registered once: a second, different object under it raises (naming both), while
registering the very same object again is a no-op, so a module imported twice or a loader
registered again does no harm. Iteration follows registration order; :meth:`names` is sorted.
``reg[name]`` is ``reg.get(name)``: an unknown name is a ConfigError (a ValueError), not a KeyError.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar, overload

from attnlab.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")
_MISSING: Any = object()


class Registry(Generic[T]):
    """Objects by name, with one-line errors for a duplicate or an unknown name.

    Args:
        kind: what the objects are, for messages ("kernel", "model family").
        known: the label before the list of names in an unknown-name error.
        same: ``same(existing, new)``: whether ``new`` counts as a re-registration of
            ``existing`` (it then replaces it); default identity. Families use it for a class
            defined again by a module that runs twice.
    """

    def __init__(self, kind: str, *, known: str = "known", same: Callable[[T, T], bool] | None = None):
        self.kind = kind
        self._known = known
        self._same = same or (lambda a, b: a is b)
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name, obj=_MISSING):
        """Register ``obj`` under ``name`` and return it; without ``obj``, a decorator.

        Raises:
            ValueError: ``name`` already holds a different object.
        """
        if obj is _MISSING:
            return lambda o: self.register(name, o)
        if name in self._items and not self._same(self._items[name], obj):
            raise ValueError(f"{self.kind} {name!r} is already registered ({_describe(self._items[name])}); "
                             f"cannot register {_describe(obj)} under the same name")
        self._items[name] = obj
        return obj

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its object (for tests and plugins that clean up)."""
        if name not in self:
            raise self.unknown(name)
        return self._items.pop(name)

    def get(self, name: str) -> T:
        """The object registered under ``name``.

        Raises:
            ConfigError: an unknown name, with the nearest known one and the full list.
        """
        if name not in self:
            raise self.unknown(name)
        return self._items[name]

    __getitem__ = get

    def unknown(self, name: Any, also: Iterable[str] = ()) -> ConfigError:
        """The error for an unknown ``name``; ``also``: further valid names to suggest and list."""
        known = sorted({*self._items, *also})
        near = difflib.get_close_matches(str(name), known, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        return ConfigError(f"unknown {self.kind} {name!r}{hint}; {self._known}: {', '.join(known)}")

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """``(name, object)`` pairs in registration order."""
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:  # an unhashable name (a list read from JSON or YAML) is simply unknown
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"


def _describe(obj: object) -> str:
    """``module.qualname`` of a class or function, else a short repr."""
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(qualname, str):
        return f"{getattr(obj, '__module__', '?')}.{qualname}"
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."
