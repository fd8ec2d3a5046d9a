"""The dispatch ledger: one record per build request id, claimed before any ACR run starts.

Service Bus delivers at least once and senders retry, so the dispatcher claims a request id
with a conditional create (Blob ``If-None-Match: *``, or an exclusive file create locally)
before it calls ACR. A redelivered message finds the record and starts nothing. Later writes
go through ``replace`` with the ETag the writer read (``If-Match``), so two deliveries racing
on the same record cannot both win. This is the shape of Powertools' idempotency persistence
layer, over Blob ETags.

``records`` (the stored schema), ``summary`` (what budgets read of each record), ``paging``
(cursors, index entry names), ``protocol`` (the ``Ledger`` port), ``blob`` and ``folder`` (the
two stores), ``blob_index`` (the Blob store's active markers and hour entries) and
``settings``. Connection settings are ``shared.platform.storage``'s, re-exported here for the
modules that import them from the ledger.
"""

from shared.platform.ledger.blob import BlobLedger as BlobLedger
from shared.platform.ledger.folder import FolderLedger as FolderLedger
from shared.platform.ledger.paging import Cursor as Cursor
from shared.platform.ledger.paging import format_cursor as format_cursor
from shared.platform.ledger.paging import parse_cursor as parse_cursor
from shared.platform.ledger.protocol import Ledger as Ledger
from shared.platform.ledger.records import DEFAULT_CONTAINER as DEFAULT_CONTAINER
from shared.platform.ledger.records import RECORD_PREFIX as RECORD_PREFIX
from shared.platform.ledger.records import ConflictError as ConflictError
from shared.platform.ledger.records import LedgerRecord as LedgerRecord
from shared.platform.ledger.records import RunStatus as RunStatus
from shared.platform.ledger.records import record_name as record_name
from shared.platform.ledger.records import validate_request_id as validate_request_id
from shared.platform.ledger.settings import EXPORT_SETTING as EXPORT_SETTING
from shared.platform.ledger.settings import MIN_RETENTION as MIN_RETENTION
from shared.platform.ledger.settings import RETENTION_SETTING as RETENTION_SETTING
from shared.platform.ledger.settings import export_from_settings as export_from_settings
from shared.platform.ledger.settings import ledger_from_settings as ledger_from_settings
from shared.platform.ledger.settings import retention_from_settings as retention_from_settings
from shared.platform.ledger.summary import RecordSummary as RecordSummary
from shared.platform.ledger.summary import is_active as is_active
