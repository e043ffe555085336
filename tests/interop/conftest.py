"""Interop fixtures: ``any_registry`` runs a test once against lamina and once against CNCF distribution,
so every behaviour lamina shows to a real client is checked against the reference registry too."""

from __future__ import annotations

import pytest

from helpers.registries import RegistryProcess


@pytest.fixture(params=["lamina", "distribution"])
def any_registry(request: pytest.FixtureRequest) -> RegistryProcess:
    name = "lamina_registry" if request.param == "lamina" else "distribution_registry"
    return request.getfixturevalue(name)
