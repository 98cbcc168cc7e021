"""Small runnable protege apps to copy (`protege --app examples.triage:app ...` from the repository root)."""
