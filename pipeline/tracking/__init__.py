"""The MLflow store: reachable and signed in, runs opened and ended with their status, what runs record, and how
SIGTERM stops a stage."""
