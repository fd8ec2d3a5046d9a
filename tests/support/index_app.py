"""Index function_app.py the way the Functions Python worker does, and print what it found.

Runs in its own interpreter (``python -m tests.support.index_app <app_dir>``): the worker
imports the app fresh, and ``FunctionRegister.get_functions`` may only run once per process.
Uses ``azure-functions-runtime`` (the worker's own loader), which also checks every Python
signature against its bindings, a check ``app.get_functions()`` alone does not make.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any


class _Record:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


class _BindingInfo(_Record):
    # The numeric values of the worker's protobuf enum.
    undefined = 0
    binary = 2
    string = 1
    stream = 3
    IN = 0
    out = 1
    inout = 2


# ``in`` is a keyword, so set it separately.
setattr(_BindingInfo, "in", 0)

PROTOS = SimpleNamespace(
    BindingInfo=_BindingInfo,
    RpcFunctionMetadata=_Record,
    RpcRetryOptions=_Record,
)


def index(app_dir: Path) -> list[dict[str, Any]]:
    from azure_functions_runtime import loader
    from azure_functions_runtime.bindings import meta
    from azure_functions_runtime.functions import Registry

    sys.path.insert(0, str(app_dir))
    meta.load_binding_registry()
    indexed = loader.index_function_app(str(app_dir / "function_app.py"))
    metadata, _logs = loader.process_indexed_function(PROTOS, Registry(), indexed, str(app_dir))
    return [
        {
            "name": m.name,
            "script_file": m.script_file,
            "raw_bindings": [json.loads(b) for b in m.raw_bindings],
            "retry": None if m.retry_options is None else vars(m.retry_options),
        }
        for m in metadata
    ]


def index_in_subprocess(app_dir: Path) -> list[dict[str, Any]]:
    """``index`` in a fresh interpreter, as the worker would (``get_functions`` runs once per process)."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "tests.support.index_app", str(app_dir)],
        cwd=app_dir,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    functions: list[dict[str, Any]] = json.loads(out.stdout)
    return functions


if __name__ == "__main__":
    print(json.dumps(index(Path(sys.argv[1]).resolve()), default=str))
