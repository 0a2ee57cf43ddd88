"""The ``toonctl dataset`` tests: a package, so its conftest is ``dataset.conftest`` and not the root ``conftest``."""
