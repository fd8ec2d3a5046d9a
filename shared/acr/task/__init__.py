"""The ACR task renderer: a BuildRequest becomes the run ACR gets (``acr-task.yaml``, ``v1.1.0``).

``render`` assembles the task (its docstring tells the run's shape and why); ``spec`` holds what a
rendered run is and the task's constants, ``validate`` and ``build`` check every value,
``secrets`` says which secrets a run carries and how, ``scripts`` and ``gate_scripts`` write the
step scripts. The names below are what the rest of Slipway imports from here.
"""

from shared.acr.task.render import dump_task as dump_task
from shared.acr.task.render import render_run as render_run
from shared.acr.task.secrets import SECRET_PLACEHOLDERS as SECRET_PLACEHOLDERS
from shared.acr.task.secrets import RunSecrets as RunSecrets
from shared.acr.task.spec import RESULT_MARKER as RESULT_MARKER
from shared.acr.task.spec import RESULT_MARKER_RE as RESULT_MARKER_RE
from shared.acr.task.spec import SCAN_REPORT_ARTIFACT_TYPE as SCAN_REPORT_ARTIFACT_TYPE
from shared.acr.task.spec import RenderError as RenderError
from shared.acr.task.spec import RunSpec as RunSpec
from shared.acr.task.spec import RunValue as RunValue
from shared.acr.task.spec import new_result_marker as new_result_marker

__all__ = [
    "RESULT_MARKER",
    "RESULT_MARKER_RE",
    "SCAN_REPORT_ARTIFACT_TYPE",
    "SECRET_PLACEHOLDERS",
    "RenderError",
    "RunSecrets",
    "RunSpec",
    "RunValue",
    "dump_task",
    "new_result_marker",
    "render_run",
]
