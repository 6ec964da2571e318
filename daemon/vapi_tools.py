"""The Vapi function-tool definitions for one clinic, ready to paste into Vapi (or POST to /tool).

The argument names and which are required mirror what `public.vapi_tool_call` accepts (the
tests hold the two together); the descriptions are what the model reads, so they name the
clinic's time zone and services, and its practitioners with theirs. A clinic without practitioners gets
no `practitioner` argument (the RPC takes one from every clinic, but only "anyone" means anything there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from daemon.domain.clinics import BookablePractitioner, ClinicProfile

RPC_PATH = "/rest/v1/rpc/vapi_tool_call"
CLINIC_KEY_PLACEHOLDER = "<the clinic key printed by add-clinic or rotate-key>"
ANON_KEY_PLACEHOLDER = "<SUPABASE_ANON_KEY>"
# Vapi's default; the RPC answers in milliseconds, so this only bounds a gateway outage.
TOOL_TIMEOUT_SECONDS = 20


def tool_definitions(
    profile: ClinicProfile,
    supabase_url: str,
    anon_key: str | None,
    clinic_key: str | None,
    *,
    credential_id: str | None = None,
) -> list[dict[str, Any]]:
    """Four function tools whose server is the clinic's RPC endpoint, authenticated by its key: in the
    `x-clinic-key` header, or with `credential_id` (`vapi-sync`) in that Vapi credential, which sends the header."""
    zone = profile.time_zone
    services = [service.name for service in profile.services]
    headers = {"apikey": anon_key or ANON_KEY_PLACEHOLDER}
    if credential_id is None:
        headers["x-clinic-key"] = clinic_key or CLINIC_KEY_PLACEHOLDER
    headers["Content-Type"] = "application/json"
    server: dict[str, Any] = {"url": supabase_url.rstrip("/") + RPC_PATH, "timeoutSeconds": TOOL_TIMEOUT_SECONDS}
    if credential_id is not None:
        server["credentialId"] = credential_id
    server["headers"] = headers
    service = _service_property(services)
    phone = {
        "type": "string",
        "description": "The patient's phone number; leave out to use the number they are calling from.",
    }
    reference = {"type": "string", "description": "The booking reference the caller was given (6 characters)."}
    tools = [
        _tool(
            "check_availability",
            f"List the free appointment start times at {profile.name} on one day, in clinic local time ({zone}).",
            {
                "date": {"type": "string", "description": f"The day, as YYYY-MM-DD ({zone})."},
                "service": service,
            },
            ["date"],
            "Let me check the diary.",
        ),
        _tool(
            "book_appointment",
            f"Book an appointment at {profile.name}. Confirm the time and name with the caller first.",
            {
                "start": {
                    "type": "string",
                    "description": f"Start time, YYYY-MM-DDTHH:MM in clinic local time ({zone}).",
                },
                "patient_name": {"type": "string", "description": "The patient's full name."},
                "patient_phone": phone,
                "service": service,
                "notes": {"type": "string", "description": "Anything the clinic should know (optional, short)."},
            },
            ["start", "patient_name"],
            "Booking that for you now.",
        ),
        _tool(
            "cancel_appointment",
            "Cancel a booking, found by its reference or the patient's phone number (and its start time when "
            "that number has several).",
            {
                "reference": reference,
                "patient_phone": phone,
                "start": {"type": "string", "description": f"Start time of the booking, YYYY-MM-DDTHH:MM ({zone})."},
            },
            [],
            "Cancelling that now.",
        ),
        _tool(
            "reschedule_appointment",
            "Move a booking, found by its reference or the patient's phone number, to a new start time.",
            {
                "reference": reference,
                "patient_phone": phone,
                "new_start": {"type": "string", "description": f"New start time, YYYY-MM-DDTHH:MM ({zone})."},
            },
            ["new_start"],
            "Moving that for you now.",
        ),
    ]
    if profile.practitioners:
        _offer_practitioners(tools, profile.practitioners)
    for tool in tools:
        tool["server"] = server
    return tools


# What each tool says about practitioners, after the clinic's roster; and its `practitioner` argument.
_PRACTITIONER_USE = {
    "check_availability": (
        "Name one for their times only; leave practitioner out for the times of everyone offering the service.",
        "The practitioner the caller asks for, by name; leave out for everyone's times.",
    ),
    "book_appointment": (
        "Leave practitioner out for whoever is free.",
        "The practitioner the caller asks for, by name; leave out for whoever is free.",
    ),
    "reschedule_appointment": (
        "The booking stays with its practitioner unless one is named ('anyone' for whoever is free); "
        "with a practitioner and no new_start it moves to them at the same time.",
        "The practitioner to move the booking to, by name, or 'anyone'; leave out to keep theirs.",
    ),
}


def _offer_practitioners(tools: list[dict[str, Any]], practitioners: Sequence[BookablePractitioner]) -> None:
    """Name the practitioners and their services, and add the optional `practitioner` argument; a reschedule
    may then change only the practitioner (new_start no longer required)."""
    roster = "; ".join(f"{p.name} ({', '.join(p.services)})" for p in practitioners)
    for tool in tools:
        function = tool["function"]
        use = _PRACTITIONER_USE.get(function["name"])
        if use is None:
            continue
        sentence, argument = use
        function["description"] += f" Practitioners: {roster}. {sentence}"
        function["parameters"]["properties"]["practitioner"] = {"type": "string", "description": argument}
        if function["name"] == "reschedule_appointment":
            function["parameters"]["required"] = []
            function["parameters"]["properties"]["new_start"]["description"] += (
                " Leave out to keep the time and change only the practitioner."
            )


def _service_property(services: Sequence[str]) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": "string", "description": "The service; leave out for the clinic's default."}
    if services:
        prop["enum"] = list(services)
    return prop


def _tool(
    name: str, description: str, properties: dict[str, Any], required: list[str], request_start: str
) -> dict[str, Any]:
    return {
        "type": "function",
        "async": False,
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
        "messages": [{"type": "request-start", "content": request_start}],
    }
