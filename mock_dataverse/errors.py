"""Typed errors shaped like Dataverse's: status (HTTP int), code (Dataverse hex code or "") and message."""

from __future__ import annotations


class DataverseError(Exception):
    """An error the mock answers with `{"error": {"code", "message"}}` and `status`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message}}


# Codes from the reference (dataverse-webapi.md section 4.9 and 5).
NOT_FOUND = "0x80040217"
KEY_NOT_FOUND = "0x80060891"
SEGMENT_NOT_FOUND = "0x8006088a"
PAYLOAD_ERROR = "0x80048d19"
VALIDATION = "0x80044331"
PICKLIST_RANGE = "0x8004431A"
DUPLICATE = "0x80040237"
NOT_AUTHENTICATED = "0x80044302"
THROTTLED_COUNT = "0x80072322"
INVALID_ARGUMENT = "0x80040203"
OPP_ALREADY_CLOSED = "0x80040515"
OPP_CANNOT_CLOSE = "0x80040516"
OPP_ALREADY_OPEN = "0x8004051a"
CONCURRENCY = "0x80060882"
GENERIC = "0x0"


def bad_request(message: str, code: str = GENERIC) -> DataverseError:
    return DataverseError(400, code, message)


def no_property(name: str, logical: str) -> DataverseError:
    return DataverseError(
        400, GENERIC, f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{logical}'."
    )


def not_found(logical: str, key: str) -> DataverseError:
    return DataverseError(404, NOT_FOUND, f"{logical} With Id = {key} Does Not Exist")
