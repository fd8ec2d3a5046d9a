"""Following runs after dispatch: reconciliation, outcomes, build and commit statuses."""
