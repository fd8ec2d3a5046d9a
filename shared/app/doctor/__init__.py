"""``slipway doctor``: does this environment work, and if not, what to fix.

Every check runs against the settings the function app itself would read, so a green doctor on
the deployed settings means the app can reach each dependency with the rights it needs: the
configuration loads; the settings the mode needs are present (no half-set registry, no Key
Vault reference left unresolved, every timer schedule a valid NCRONTAB expression); the queue
can be peeked; the ledger, state and cache containers can be read; a probe blob can be written
to the ledger and deleted again; ACR runs can be listed.

Each check reports one line: a failure names the setting it concerns and one fix, never an
SDK's traceback (``report``). ``core`` runs the checks; ``settings_checks``, ``storage_checks``
and ``registry_checks`` hold them by area.

The doctor changes nothing that outlives it: it never creates a container, a queue or a
directory, and the only thing it writes is its probe, deleted at once (its name says what it is,
should a crash leave it behind).
"""

from shared.app.doctor.core import Doctor, azure_mode
from shared.app.doctor.report import CheckResult, DoctorReport, Status, report_rows
from shared.app.doctor.storage_checks import PROBE_PREFIX

__all__ = [
    "PROBE_PREFIX",
    "CheckResult",
    "Doctor",
    "DoctorReport",
    "Status",
    "azure_mode",
    "report_rows",
]
