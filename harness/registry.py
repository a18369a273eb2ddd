"""Name -> factory registries, so a new engine/sampler/dataset is one module plus one entry.

Entries are registered lazily as "module:attribute" strings: importing an engine's
package (torch for xgrammar, say) only happens when that engine is asked for.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, TypeVar

from .errors import ConfigError, EngineUnavailable

T = TypeVar("T")


def takes(factory: Callable[..., Any]) -> set[str]:
    """The argument names a factory (an engine, sampler or dataset loader) declares: what a
    component option (--sampler-args, --dataset-args) may name."""
    import inspect

    return set(inspect.signature(factory).parameters)


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, str | Callable[..., T]] = {}

    def register(self, name: str, target: str | Callable[..., T]) -> None:
        self._entries[name] = target

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} '{name}' (known: {', '.join(sorted(self._entries))})"
            )
        target = self._entries[name]
        if isinstance(target, str):
            module_name, attr = target.split(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise EngineUnavailable(
                    f"{self.kind} '{name}' is not installed: {exc}"
                ) from exc
            target = getattr(module, attr)
            self._entries[name] = target
        return target

    def available(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except EngineUnavailable:
            return False

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        return self.get(name)(*args, **kwargs)
