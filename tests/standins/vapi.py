"""Builds tool-call messages the way a Vapi assistant sends them to a tool server."""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

_ids = itertools.count(1)


def new_tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:20]}{next(_ids)}"


def reference_of(confirmation: str) -> str:
    """The booking reference at the end of a "Booked: ... Reference K7P2QX." confirmation."""
    return confirmation.rsplit("Reference ", 1)[1].rstrip(".")


def tool_call(
    name: str, arguments: dict[str, Any], *, call_id: str | None = None, as_string: bool = False
) -> dict[str, Any]:
    """One `toolCallList` item; `as_string` sends arguments JSON-encoded, as Vapi's schema types them."""
    return {
        "id": call_id or new_tool_call_id(),
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments) if as_string else arguments},
    }


def _with_tool(call: Any) -> Any:
    """The `toolWithToolCallList` entry Vapi sends alongside a `toolCallList` item."""
    if not isinstance(call, dict):
        return call
    function = call.get("function")
    name = function.get("name") if isinstance(function, dict) else call.get("name")
    return {"type": "function", "function": {"name": name}, "toolCall": call}


@dataclass
class VapiCall:
    """One phone call: the caller's number and the assistant's metadata travel with every message."""

    customer_number: str | None = "+447700900123"
    assistant_metadata: dict[str, Any] = field(default_factory=dict)
    call_id: str = field(default_factory=lambda: f"vapi-call-{uuid.uuid4()}")

    def message(self, *calls: dict[str, Any]) -> dict[str, Any]:
        customer = {"number": self.customer_number} if self.customer_number else {}
        return {
            "message": {
                "type": "tool-calls",
                "toolCallList": list(calls),
                "toolWithToolCallList": [_with_tool(c) for c in calls],
                "call": {"id": self.call_id, "customer": customer},
                "customer": customer,
                "assistant": {"name": "Reception", "metadata": self.assistant_metadata},
                "phoneNumber": {"number": "+442071234567"},
            }
        }


@dataclass
class Assistant:
    """A clinic's Vapi assistant calling `vapi_tool_call` through the REST gateway."""

    gateway: Any  # psycopg.Connection logged in as `authenticator`
    clinic_key: str | None
    call: VapiCall = field(default_factory=VapiCall)

    @property
    def headers(self) -> dict[str, str]:
        headers = {"apikey": "anon-key", "content-type": "application/json"}
        if self.clinic_key is not None:
            headers["x-clinic-key"] = self.clinic_key
        return headers

    def send(self, body: Any) -> Any:
        from tests.standins.postgrest import rpc

        return rpc(self.gateway, "vapi_tool_call", body, headers=self.headers)

    def use(self, name: str, arguments: dict[str, Any], *, call_id: str | None = None) -> dict[str, Any]:
        """Make one tool call and return its result item ({toolCallId, result|error})."""
        item = tool_call(name, arguments, call_id=call_id)
        response = self.send(self.call.message(item))
        [result] = response["results"]
        assert result["toolCallId"] == item["id"]
        return dict(result)

    def book(self, start: str, patient_name: str = "Jane Doe", **extra: str) -> str:
        """Book (which must succeed) and return the booking's reference."""
        item = self.use("book_appointment", {"start": start, "patient_name": patient_name, **extra})
        assert "result" in item and "\n" not in item["result"], item
        return reference_of(str(item["result"]))
