"""Mock Dataverse: a local Web API + token service with a seeded sales org (see docs/MOCK.md)."""
