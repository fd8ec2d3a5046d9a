"""Azure Container Registry runs: the task YAML, its preparation, the run API, quarantine."""
