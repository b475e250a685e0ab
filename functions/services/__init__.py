"""Orchestration: each service function does one operation end to end with connectors, model_store and modeling."""
