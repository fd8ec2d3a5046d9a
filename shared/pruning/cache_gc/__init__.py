"""Garbage collection of BuildKit's azblob cache: expire manifests, mark, sweep unreferenced blobs.

BuildKit never expires its azblob cache, and an age-based lifecycle rule would delete hot shared
layers (a blob's last-modified time is its first upload). The collector works in the only safe
order: decide which manifests expire, mark every blob a remaining manifest references, and
delete only unreferenced blobs older than a grace period.

Modules: ``layout`` (blob names and the
manifest format), ``planner`` (the pure decisions), ``store`` (the Blob Storage adapter),
``collector`` (the run: the planner over a store, with the safety re-checks), ``report`` (what a
run did), ``prune`` (wiring from the configuration, and the timer's run). Importing this package
loads no Azure SDK.
"""
