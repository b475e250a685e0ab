"""A local stand-in for Azure Functions Core Tools (which cannot be installed on every machine)."""
