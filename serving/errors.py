"""The service's one error shape: ``{"error": {"code", "message", "details"}, "request_id"}``."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error the client can act on; becomes a JSON answer with ``status``."""

    def __init__(
        self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []


def error_body(
    code: str, message: str, request_id: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "error": {"code": code, "message": message, "details": details or []},
        "request_id": request_id,
    }
