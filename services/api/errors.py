"""The one error every endpoint answers with: a status and a one-line reason naming the field or parameter."""

from __future__ import annotations

from services.api import documents

RETRY = (("Retry-After", "1"),)  # the headers of an answer worth retrying in a second


class ApiError(Exception):
    """An answer other than 200: its status, a reason naming the field or parameter, extra headers."""

    def __init__(
        self, status: int, reason: str, *, headers: tuple[tuple[str, str], ...] = (), work_id: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers
        self.work_id = work_id
        self.field = field  # a refused request field, when one is to blame

    def document(self) -> documents.ErrorDoc:
        """The one-line JSON body of this error."""
        return documents.ErrorDoc(error=self.reason, success=False, work_id=self.work_id, field=self.field)
