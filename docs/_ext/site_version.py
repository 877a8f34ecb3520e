"""MkDocs hook: the site's header names the documented release, ``sa_river.__version__``.

Loaded by mkdocs.yml (``hooks``). The version is the installed package's, so a site built from a
checkout shows the version in ``pyproject.toml``.
"""

from __future__ import annotations

from typing import Any

import sa_river


def on_config(config: Any, **kwargs: Any) -> Any:
    config["site_name"] = f"{config['site_name']} {sa_river.__version__}"
    return config
