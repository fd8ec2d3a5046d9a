"""Which app settings the code reads, found in the source the way a reviewer would grep for them.

Shared by the checks that the sample settings (tests/test_function_app.py) and the deployment
template (tests/test_infra.py) carry every one of them.
"""

from __future__ import annotations

import re
from pathlib import Path

# ``settings.get("X")``, ``settings["X"]``, ``os.environ.setdefault("X", ...)``.
_READ = re.compile(
    r"""(?:settings|environ)(?:\.get\(\s*|\[\s*|\.setdefault\(\s*)["']([A-Za-z][A-Za-z0-9_]*)["']"""
)
# ``TOKEN_SETTING = "X"``: names handed to helpers.
_CONSTANT = re.compile(r"""^[A-Z_]+_SETTING\s*=\s*["']([A-Za-z0-9_]+)["']""", re.M)
# Slipway's own setting names, wherever they are spelt (helpers take them as arguments too).
_OWN = re.compile(
    r"""["']((?:SLIPWAY|ACR|GITHUB|GITLAB|BITBUCKET|GITEA|AZURE_DEVOPS|EVENTGRID|DOCKERHUB)_[A-Z0-9_]+)["']"""
)
# Strings that look like settings but are not: a heredoc delimiter; a constant in shared/platform/oci/;
# what App Service sets by itself on every app (read by ``slipway doctor`` to tell it runs there),
# and when its authentication module is on (read by the ops endpoint to trust the caller's name).
NOT_SETTINGS = frozenset({"SLIPWAY_SCRIPT", "ACR_AUDIENCE", "WEBSITE_SITE_NAME", "WEBSITE_AUTH_ENABLED"})


def settings_read_by_code(root: Path) -> set[str]:
    """Every setting name the app's code (function_app.py, handlers/, shared/) reads."""
    read: set[str] = set()
    for path in [*root.glob("shared/**/*.py"), *root.glob("handlers/*.py"), root / "function_app.py"]:
        text = path.read_text()
        read.update(match.group(1) for match in _READ.finditer(text))
        read.update(_CONSTANT.findall(text))
        read.update(_OWN.findall(text))
    return read - NOT_SETTINGS
