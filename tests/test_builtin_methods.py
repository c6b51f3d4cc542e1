"""Every built-in method resolves on every backend its card declares; a misnamed module fails."""

from __future__ import annotations

import sys
import types

import pytest

from backends import methods
from backends.spec import BACKENDS, MethodCard
from harness import registry


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_builtin_method_resolves_on_every_declared_backend(backend: str) -> None:
    declared = [name for name in methods.BUILTIN_METHODS if backend in methods.card(name).backends]
    assert declared == list(methods.BUILTIN_METHODS)  # today every built-in method is on both backends
    found = registry.builtin_names(backend)
    assert found == declared
    for name in declared:
        adapter = registry.get_adapter(name, backend)
        assert (adapter.name, adapter.backend) == (name, backend)
        assert adapter.Hyperparams is methods.card(name).Hyperparams


def test_cards_declare_only_known_backends() -> None:
    for name in methods.BUILTIN_METHODS:
        card = methods.card(name)
        assert card.name == name
        assert card.backends and set(card.backends) <= set(BACKENDS), name


def _ghost_card(monkeypatch: pytest.MonkeyPatch, backends: tuple[str, ...]) -> None:
    sgd = methods.card("sgd")
    module = types.ModuleType("backends.methods.ghost")
    module.CARD = MethodCard(  # type: ignore[attr-defined]
        "ghost", sgd.paper, sgd.description, sgd.Hyperparams, sgd.search_space, backends=backends
    )
    monkeypatch.setitem(sys.modules, "backends.methods.ghost", module)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_declared_method_without_its_module_fails_loudly(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    _ghost_card(monkeypatch, BACKENDS)
    with pytest.raises(methods.MissingAdapterError, match=f"backends.{backend}.optimizers.ghost does not exist"):
        methods.builtin_adapters(backend, ("sgd", "ghost"))


def test_a_method_not_declared_for_a_backend_is_not_looked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    _ghost_card(monkeypatch, ("jax",))
    assert list(methods.builtin_adapters("torch", ("sgd", "ghost"))) == ["sgd"]


def test_a_module_whose_adapter_is_another_method_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    _ghost_card(monkeypatch, ("torch",))
    impostor = types.ModuleType("backends.torch.optimizers.ghost")
    impostor.ADAPTER = registry.get_adapter("sgd", "torch")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "backends.torch.optimizers.ghost", impostor)
    with pytest.raises(methods.MissingAdapterError, match="must be the torch adapter of 'ghost'"):
        methods.builtin_adapters("torch", ("ghost",))
