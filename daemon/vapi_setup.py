"""Vapi set up by the product: a clinic's four tools, the credential carrying its key and (optionally) its
assistant, made and kept in step through Vapi's API (`clinic-sync vapi-sync`, `rotate-key`, `verify`, and the
daemon's re-syncs of stale clinics).

What Vapi should hold is what `vapi-tools` prints (daemon/vapi_tools.py), with one difference: the clinic key
is not a header of the tools but the secret of a Vapi custom credential (bearer, header `x-clinic-key`, no
"Bearer" prefix) that each tool's `server.credentialId` names. The anon/publishable `apikey` stays a header.

A sync reads before it writes: the credential (GET), each remembered tool (GET, compared with what it should
be), and the assistant; then it makes only what is missing (POST), updates only what differs (PATCH) and
records each new Vapi id in the database at once (55_vapi_setup.sql), so a second run changes nothing and no
run makes a second copy. The database decides what is stale and when to try again; this module does the
talking to Vapi, under the lease the database gives it.

The credential's key: keys are stored only as hashes, so the key Vapi needs is issued for it (label
"vapi credential") when the credential is made, re-keyed or rotated, and goes from memory to Vapi; a key
Vapi never received is revoked at once.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from loguru import logger

from daemon.config import VapiSettings
from daemon.domain.clinics import ClinicProfile
from daemon.domain.vapi_setup import VapiSetup
from daemon.metrics import Metrics
from daemon.store import Store, StoreError
from daemon.vapi_api import VapiClient, VapiError, VapiNotFound
from daemon.vapi_tools import tool_definitions

CREDENTIAL_HEADER = "x-clinic-key"
# One run (a few requests, each retried within its bounds) fits well within this.
LEASE_SECONDS = 300
RESYNC_BATCH = 10
NEW_CREDENTIAL = "<the new credential>"
# Where a tool's definition must equal Vapi's key for key (an extra header or argument there is a difference);
# elsewhere Vapi may add fields of its own (ids, dates, defaults).
EXACT_KEYS = frozenset({"headers", "properties"})

Verb = Literal["create", "recreate", "update", "re-key", "keep"]
_DONE = {
    "create": "created",
    "recreate": "made again",
    "update": "updated",
    "re-key": "re-keyed",
    "keep": "unchanged",
}


def missing_settings(settings: VapiSettings) -> list[str]:
    """The settings a sync needs that are not set."""
    wanted = {
        "VAPI_API_KEY": settings.vapi_api_key,
        "SUPABASE_URL": settings.supabase_url,  # the tools' server URL
        "SUPABASE_ANON_KEY": settings.supabase_anon_key,  # their apikey header
    }
    return [name for name, value in wanted.items() if value is None]


def open_vapi(settings: VapiSettings) -> VapiClient:
    assert settings.vapi_api_key is not None
    return VapiClient(
        settings.vapi_api_url, settings.vapi_api_key.get_secret_value(), timeout_seconds=settings.vapi_timeout_seconds
    )


def command_owner() -> str:
    """Names an operator command's run in the setup's lease."""
    return f"clinic-sync:{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Endpoint:
    """Where the tools call: the project's RPC URL and its publishable (anon) key."""

    supabase_url: str
    anon_key: str

    @classmethod
    def of(cls, settings: VapiSettings) -> Endpoint:
        assert settings.supabase_url is not None and settings.supabase_anon_key is not None
        return cls(settings.supabase_url, settings.supabase_anon_key.get_secret_value())

    def tools(self, profile: ClinicProfile, credential_id: str) -> dict[str, dict[str, Any]]:
        """What Vapi should hold: `vapi-tools`' definitions, the key in the credential, by function name."""
        definitions = tool_definitions(profile, self.supabase_url, self.anon_key, None, credential_id=credential_id)
        return {tool["function"]["name"]: tool for tool in definitions}


def credential_body(profile: ClinicProfile, key: str) -> dict[str, Any]:
    """A custom credential sending the clinic key as the x-clinic-key header (no "Bearer" prefix)."""
    return {
        "provider": "custom-credential",
        "name": f"{CREDENTIAL_HEADER} {profile.name}"[:40],
        "authenticationPlan": _authentication_plan(key),
    }


def _authentication_plan(key: str) -> dict[str, Any]:
    return {"type": "bearer", "token": key, "headerName": CREDENTIAL_HEADER, "bearerPrefixEnabled": False}


def differences(wanted: Any, actual: Any, path: str = "") -> list[str]:
    """Where Vapi's copy differs from what it should be (dotted paths); [] when it matches. Keys Vapi adds are
    ignored, except under EXACT_KEYS."""
    if isinstance(wanted, Mapping):
        if not isinstance(actual, Mapping):
            return [path or "the whole tool"]
        found: list[str] = []
        for key, value in wanted.items():
            where = f"{path}.{key}" if path else key
            found += [where] if key not in actual else differences(value, actual[key], where)
        if path.rsplit(".", 1)[-1] in EXACT_KEYS:
            found += [f"{path}.{key}" for key in sorted(set(actual) - set(wanted))]
        return found
    if isinstance(wanted, list):
        same = (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and not any(differences(w, a, path) for w, a in zip(wanted, actual, strict=True))
        )
        return [] if same else [path]
    return [] if wanted == actual else [path]


@dataclass(frozen=True)
class Change:
    """One thing a sync made, changed or left alone (or, in a dry run, would)."""

    verb: Verb
    subject: str  # "credential cred-1", "tool check_availability", "assistant asst-1"
    detail: str = ""

    def line(self, *, dry_run: bool) -> str:
        verb = ("would " + self.verb if self.verb != "keep" else "unchanged") if dry_run else _DONE[self.verb]
        return f"  {verb:<14} {self.subject}{': ' + self.detail if self.detail else ''}"


@dataclass(frozen=True)
class ToolStep:
    name: str
    verb: Verb
    tool_id: str | None
    why: str = ""


@dataclass(frozen=True)
class AssistantStep:
    """What the assistant's model and metadata should become (None: unchanged), and why."""

    assistant_id: str
    model: dict[str, Any] | None
    metadata: dict[str, Any] | None
    notes: tuple[str, ...]


@dataclass
class Plan:
    """What a sync would do for one clinic, from what Vapi holds now (reads only)."""

    profile: ClinicProfile
    setup: VapiSetup | None
    credential: Verb
    credential_why: str
    tools: list[ToolStep]
    assistant: dict[str, Any] | None = None  # as Vapi returned it
    foreign_tools: dict[str, str] = field(default_factory=dict)  # its other tool ids -> function name

    @property
    def credential_id(self) -> str | None:
        return self.setup.credential_id if self.setup else None

    def changes(self) -> list[Change]:
        credential = f"credential {self.credential_id or ''}".rstrip()
        found = [Change(self.credential, credential, self.credential_why)]
        found += [Change(step.verb, f"tool {step.name}", step.why or (step.tool_id or "")) for step in self.tools]
        if self.assistant is not None:
            ids = {step.name: step.tool_id if step.verb in ("keep", "update") else None for step in self.tools}
            step = assistant_step(self, ids)
            found.append(
                Change("update" if step.notes else "keep", f"assistant {step.assistant_id}", "; ".join(step.notes))
            )
        return found

    @property
    def in_step(self) -> bool:
        return all(change.verb == "keep" for change in self.changes())


async def plan(
    vapi: VapiClient,
    endpoint: Endpoint,
    profile: ClinicProfile,
    setup: VapiSetup | None,
    *,
    rekey: bool = False,
    assistant_id: str | None = None,
) -> Plan:
    """Compare what Vapi holds with what it should hold (GETs only)."""
    credential, why = await _plan_credential(vapi, setup, rekey)
    credential_id = setup.credential_id if setup and setup.credential_id and credential in ("keep", "re-key") else None
    wanted = endpoint.tools(profile, credential_id or NEW_CREDENTIAL)
    known = setup.tools if setup else {}
    steps: list[ToolStep] = []
    for name, body in wanted.items():
        tool_id = known.get(name)
        if tool_id is None:
            steps.append(ToolStep(name, "create", None))
            continue
        try:
            actual = await vapi.get_tool(tool_id)
        except VapiNotFound:
            steps.append(ToolStep(name, "recreate", tool_id, f"{tool_id} was deleted in Vapi"))
            continue
        found = differences(body, actual)
        steps.append(ToolStep(name, "update" if found else "keep", tool_id, _summary(tool_id, found)))
    result = Plan(profile, setup, credential, why, steps)
    assistant_id = assistant_id or (setup.assistant_id if setup else None)
    if assistant_id is not None:
        try:
            result.assistant = await vapi.get_assistant(assistant_id)
        except VapiNotFound as error:
            raise VapiError(
                f"assistant {assistant_id} is not in Vapi (HTTP 404): check the id (--assistant)", status=404
            ) from error
        result.foreign_tools = await _foreign_tools(vapi, result.assistant, setup)
    return result


def _summary(tool_id: str, found: Sequence[str]) -> str:
    if not found:
        return tool_id
    shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
    return f"{tool_id}: {shown} differed"


async def _plan_credential(vapi: VapiClient, setup: VapiSetup | None, rekey: bool) -> tuple[Verb, str]:
    if setup is None or setup.credential_id is None:
        return "create", "bearer, header x-clinic-key, no prefix; holds a new clinic key (label 'vapi credential')"
    try:
        actual = await vapi.get_credential(setup.credential_id)
    except VapiNotFound:
        return "recreate", f"{setup.credential_id} was deleted in Vapi; a new key for it, the old one revoked"
    if rekey:
        return "re-key", "a new clinic key in it"
    plan_now = actual.get("authenticationPlan")
    if isinstance(plan_now, Mapping):
        wanted = {k: v for k, v in _authentication_plan("").items() if k != "token"}
        if differences(wanted, plan_now):
            return "re-key", "its header was changed in Vapi; set again with a new key"
    if not setup.credential_key_valid:
        return "re-key", "its key was revoked; a new one in it"
    return "keep", ""


async def _foreign_tools(vapi: VapiClient, assistant: Mapping[str, Any], setup: VapiSetup | None) -> dict[str, str]:
    """The assistant's other tools (not this clinic's, past or present), by id: their function names."""
    ours = set(setup.tools.values()) if setup else set()
    names: dict[str, str] = {}
    for tool_id in _model(assistant).get("toolIds") or []:
        if tool_id in ours:
            continue
        with contextlib.suppress(VapiNotFound):
            tool = await vapi.get_tool(str(tool_id))
            names[str(tool_id)] = str((tool.get("function") or {}).get("name") or "")
    return names


def _model(assistant: Mapping[str, Any]) -> dict[str, Any]:
    model = assistant.get("model")
    return dict(model) if isinstance(model, Mapping) else {}


def assistant_step(plan: Plan, tool_ids: Mapping[str, str | None]) -> AssistantStep:
    """The assistant with this clinic's tools attached (once each), hand-made copies of them (same function name)
    and this clinic's replaced tools detached, and metadata org_id = the clinic id."""
    assert plan.assistant is not None
    assistant_id = str(plan.assistant.get("id") or (plan.setup.assistant_id if plan.setup else ""))
    names = {step.name for step in plan.tools}
    previous = set(plan.setup.tools.values()) if plan.setup else set()
    current = {tool_id for tool_id in tool_ids.values() if tool_id}
    model = _model(plan.assistant)
    attached = [str(i) for i in model.get("toolIds") or []]
    notes: list[str] = []
    copies = [i for i in attached if plan.foreign_tools.get(i) in names]
    replaced = [i for i in attached if i in previous and i not in current]
    kept = [i for i in attached if i not in copies and i not in replaced]
    missing = [name for name, tool_id in tool_ids.items() if not tool_id or tool_id not in kept]
    new_ids = kept + [tool_ids[name] or f"<new {name}>" for name in missing]
    if missing:
        notes.append(f"attached {', '.join(missing)}")
    if copies:
        notes.append(f"detached copies made by hand: {', '.join(f'{plan.foreign_tools[i]} ({i})' for i in copies)}")
    if replaced:
        notes.append(f"detached replaced tool(s) {', '.join(replaced)}")
    inline = [t for t in model.get("tools") or [] if (t.get("function") or {}).get("name") in names]
    new_model: dict[str, Any] | None = None
    if missing or copies or replaced or inline:
        new_model = {**model, "toolIds": new_ids}
        if inline:
            new_model["tools"] = [t for t in model.get("tools") or [] if t not in inline]
            notes.append(f"removed inline copies of {', '.join(sorted({t['function']['name'] for t in inline}))}")
    metadata = plan.assistant.get("metadata")
    metadata = dict(metadata) if isinstance(metadata, Mapping) else {}
    new_metadata: dict[str, Any] | None = None
    if metadata.get("org_id") != str(plan.profile.id):
        new_metadata = {**metadata, "org_id": str(plan.profile.id)}
        notes.append("metadata org_id set to the clinic id")
    return AssistantStep(assistant_id, new_model, new_metadata, tuple(notes))


@dataclass
class SyncReport:
    clinic_id: uuid.UUID
    clinic_name: str
    changes: list[Change]
    dry_run: bool = False
    revision: int | None = None
    in_step: bool = False
    credential_made: bool = False

    def lines(self) -> list[str]:
        out = [f"Vapi for {self.clinic_name} (clinic {self.clinic_id}):"]
        out += [change.line(dry_run=self.dry_run) for change in self.changes]
        writes = any(change.verb != "keep" for change in self.changes)
        if self.dry_run:
            out.append("Dry run: nothing was changed, in Vapi or in the database." if writes else "Nothing to change.")
        elif not writes:
            out.append(f"Nothing to change: Vapi matches the clinic (revision {self.revision}).")
        elif self.in_step:
            out.append(f"Vapi matches the clinic (revision {self.revision}).")
        else:
            out.append("The clinic changed during the sync: the daemon syncs it again.")
        return out


class VapiSyncFailed(Exception):
    """A sync stopped on a Vapi error, recorded in the database (the daemon retries); what it did before."""

    def __init__(self, message: str, report: SyncReport) -> None:
        super().__init__(message)
        self.report = report


async def sync_clinic(
    store: Store,
    vapi: VapiClient,
    endpoint: Endpoint,
    clinic_id: uuid.UUID,
    *,
    owner: str,
    assistant_id: str | None = None,
    dry_run: bool = False,
    rotate_grace_minutes: int | None = None,
) -> SyncReport:
    """`vapi-sync` (and, with `rotate_grace_minutes`, `rotate-key` of a clinic set up in Vapi)."""
    if dry_run:
        setup = await store.vapi_setup(clinic_id)
        profile = await store.clinic_profile(clinic_id)
        found = await plan(
            vapi, endpoint, profile, setup, rekey=rotate_grace_minutes is not None, assistant_id=assistant_id
        )
        return SyncReport(
            clinic_id, profile.name, found.changes(), dry_run=True, revision=setup.revision if setup else None
        )
    setup = await store.claim_vapi_setup(clinic_id, owner, LEASE_SECONDS, assistant_id)
    return await _sync_claimed(store, vapi, endpoint, setup, owner, rotate_grace_minutes)


async def _sync_claimed(
    store: Store,
    vapi: VapiClient,
    endpoint: Endpoint,
    setup: VapiSetup,
    owner: str,
    rotate_grace_minutes: int | None = None,
) -> SyncReport:
    """One sync under the lease: the plan, then its writes; the outcome recorded either way."""
    report = SyncReport(setup.clinic_id, setup.clinic_name, [], revision=setup.revision)
    try:
        # Read after the claim: the profile is at least as new as the revision recorded at the end.
        profile = await store.clinic_profile(setup.clinic_id)
        report.clinic_name = profile.name
        found = await plan(vapi, endpoint, profile, setup, rekey=rotate_grace_minutes is not None)
        await _apply(store, vapi, endpoint, found, owner, report, rotate_grace_minutes)
    except VapiError as error:
        retry_after = None if error.retry_after is None else int(error.retry_after + 0.999)
        due = await store.vapi_setup_failed(setup.clinic_id, owner, str(error), retry_after)
        logger.warning("vapi: sync of clinic {} failed: {}; next try {:%H:%M:%S} UTC", setup.clinic_id, error, due)
        raise VapiSyncFailed(
            f"{error}. Recorded: a daemon with VAPI_API_KEY tries again from {due:%H:%M:%S} UTC (clinic-sync verify"
            " shows it)",
            report,
        ) from None
    except BaseException as error:
        with contextlib.suppress(StoreError):  # the lease runs out on its own otherwise
            await store.vapi_setup_failed(setup.clinic_id, owner, f"the sync stopped: {type(error).__name__}")
        raise
    report.in_step = await store.vapi_setup_synced(setup.clinic_id, owner, setup.revision)
    return report


async def _apply(
    store: Store,
    vapi: VapiClient,
    endpoint: Endpoint,
    found: Plan,
    owner: str,
    report: SyncReport,
    rotate_grace_minutes: int | None,
) -> None:
    clinic_id = found.profile.id
    credential_id = found.credential_id
    if found.credential != "keep":
        credential_id = await _make_credential(store, vapi, found, owner, rotate_grace_minutes)
        report.credential_made = found.credential in ("create", "recreate")
        _did(report, Change(found.credential, f"credential {credential_id}", found.credential_why), clinic_id)
    else:
        _did(report, Change("keep", f"credential {credential_id}"), clinic_id)
    assert credential_id is not None
    wanted = endpoint.tools(found.profile, credential_id)
    ids: dict[str, str | None] = {}
    orphans: list[dict[str, Any]] | None = [] if report.credential_made else None  # a new credential has no tools
    recorded = set(found.setup.tools.values()) if found.setup else set()
    for step in found.tools:
        body = wanted[step.name]
        if step.verb == "keep":
            ids[step.name] = step.tool_id
            _did(report, Change("keep", f"tool {step.name}", step.tool_id or ""), clinic_id)
            continue
        if step.verb == "update" and step.tool_id is not None:
            try:
                await vapi.update_tool(step.tool_id, body)
                ids[step.name] = step.tool_id
                _did(report, Change("update", f"tool {step.name}", step.why), clinic_id)
                continue
            except VapiNotFound:
                step = ToolStep(step.name, "recreate", step.tool_id, f"{step.tool_id} was deleted in Vapi")
        if orphans is None:
            orphans = await vapi.list_tools()
        tool_id, how = await _make_tool(vapi, body, credential_id, orphans, recorded)
        await store.record_vapi_tool(clinic_id, owner, step.name, tool_id)
        ids[step.name] = tool_id
        _did(report, Change(step.verb, f"tool {step.name}", f"{tool_id}{how}"), clinic_id)
    if found.assistant is not None:
        step_now = assistant_step(found, ids)
        if step_now.model is None and step_now.metadata is None:
            _did(report, Change("keep", f"assistant {step_now.assistant_id}"), clinic_id)
        else:
            patch: dict[str, Any] = {}
            if step_now.model is not None:
                patch["model"] = step_now.model
            if step_now.metadata is not None:
                patch["metadata"] = step_now.metadata
            await vapi.update_assistant(step_now.assistant_id, patch)
            _did(report, Change("update", f"assistant {step_now.assistant_id}", "; ".join(step_now.notes)), clinic_id)


async def _make_credential(
    store: Store, vapi: VapiClient, found: Plan, owner: str, rotate_grace_minutes: int | None
) -> str:
    """A new clinic key into a new (or the same, re-keyed) credential; the key revoked if Vapi never got it."""
    clinic_id = found.profile.id
    issued = await store.issue_vapi_credential_key(clinic_id, owner)
    key = issued.key.get_secret_value()
    try:
        if found.credential == "re-key" and found.credential_id is not None:
            await vapi.update_credential(found.credential_id, {"authenticationPlan": _authentication_plan(key)})
            credential_id = found.credential_id
        else:
            created = await vapi.create_credential(credential_body(found.profile, key))
            credential_id = str(created["id"])
    except BaseException:
        with contextlib.suppress(StoreError):
            await store.revoke_key(issued.key_id)
        raise
    await store.save_vapi_credential(clinic_id, owner, credential_id, issued.key_id, rotate_grace_minutes)
    return credential_id


async def _make_tool(
    vapi: VapiClient, body: Mapping[str, Any], credential_id: str, orphans: list[dict[str, Any]], recorded: set[str]
) -> tuple[str, str]:
    """A tool made for this clinic: one an earlier run made but could not record (same function, same credential:
    adopted, updated if need be), else a new one."""
    name = body["function"]["name"]
    for tool in orphans:
        server = tool.get("server") or {}
        if (
            (tool.get("function") or {}).get("name") == name
            and server.get("credentialId") == credential_id
            and str(tool.get("id")) not in recorded
        ):
            tool_id = str(tool["id"])
            if differences(body, tool):
                await vapi.update_tool(tool_id, body)
            return tool_id, " (made by an earlier run, now recorded)"
    created = await vapi.create_tool(body)
    return str(created["id"]), ""


def _did(report: SyncReport, change: Change, clinic_id: uuid.UUID) -> None:
    report.changes.append(change)
    if change.verb != "keep":
        logger.info("vapi: {} {} for clinic {}", _DONE[change.verb], change.subject, clinic_id)


class VapiKeeper:
    """The daemon's job: re-sync the stale clinics whose next try is due (after a change to their services or
    practitioners, or a failed sync), one lease each. Runs on the event loop beside the sync loop and never
    waits on it: bookings go on whatever Vapi does."""

    def __init__(self, store: Store, settings: VapiSettings, owner: str, metrics: Metrics | None = None) -> None:
        self._store = store
        self._settings = settings
        self._endpoint = Endpoint.of(settings)
        self._owner = owner
        self._metrics = metrics

    async def run_once(self) -> int:
        """Re-sync what is due (then the metrics' snapshot of every setup); how many clinics were tried."""
        try:
            setups = await self._store.claim_stale_vapi_setups(self._owner, RESYNC_BATCH, LEASE_SECONDS)
        except StoreError as error:
            logger.warning("vapi: could not read the stale clinics: {}", error)
            return 0
        if setups:
            async with open_vapi(self._settings) as vapi:
                for setup in setups:
                    await self._resync(vapi, setup)
        if self._metrics is not None:
            try:
                self._metrics.vapi_setups(await self._store.vapi_setups_overview())
            except StoreError as error:
                logger.warning("vapi: could not read the setups for metrics: {}", error)
        return len(setups)

    async def _resync(self, vapi: VapiClient, setup: VapiSetup) -> None:
        try:
            report = await _sync_claimed(self._store, vapi, self._endpoint, setup, self._owner)
        except VapiSyncFailed:
            self._count("failed")
            return
        except StoreError as error:
            logger.warning("vapi: re-sync of clinic {} stopped: {}", setup.clinic_id, error)
            self._count("failed")
            return
        self._count("ok")
        changed = [change.subject for change in report.changes if change.verb != "keep"]
        logger.info(
            "vapi: clinic {} re-synced ({}): {}",
            setup.clinic_id,
            setup.stale_because or "stale",
            ", ".join(changed) if changed else "nothing differed",
        )

    def _count(self, result: Literal["ok", "failed"]) -> None:
        if self._metrics is not None:
            self._metrics.vapi_synced(result)


def vapi_keeper(settings: VapiSettings, store: Store, owner: str, metrics: Metrics | None = None) -> VapiKeeper | None:
    """The daemon's re-sync job, when Vapi is configured (VAPI_API_KEY, SUPABASE_URL, SUPABASE_ANON_KEY)."""
    if settings.vapi_api_key is None:
        return None
    missing = missing_settings(settings)
    if missing:
        logger.warning("vapi: VAPI_API_KEY is set but not {}: stale Vapi tools are not re-synced", ", ".join(missing))
        return None
    return VapiKeeper(store, settings, owner, metrics)
