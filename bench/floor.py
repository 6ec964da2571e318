"""The floor: the least work that syncing a queue of appointments to Google physically takes.

    .venv/bin/python -m bench.floor < config.json

No framework: a few threads, each with one plain psycopg connection and one keep-alive
http.client connection to the Calendar API. Each thread loops: claim a small batch (one
UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n) RETURNING ...), POST one
events.insert per row, write the batch back with one UPDATE, until the queue is empty and
`expect` rows are synced. Google's per-account quota applies as Google applies it: at most
`requests_per_minute` per clinic in any sliding 60 s window. It is the yardstick `bench.throughput` compares the
daemon's drain rate with; it handles no errors beyond counting them and leaving the row.

Config (JSON on stdin): dsn, api_endpoint, tokens ({clinic_id: access token}), calendars
({clinic_id: [calendar_id, time_zone]}), workers, batch, requests_per_minute, expect.
Prints one JSON line when done: synced, errors, seconds, cpu_seconds (all threads), reconnects,
failed, peak_rss_mb.
"""

from __future__ import annotations

import base64
import collections
import http.client
import json
import resource
import sys
import threading
import time
import urllib.parse
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

CLAIM = """
update public.appointments a
   set sync_state = 'in_flight', lease_owner = %(owner)s,
       lease_expires_at = now() + interval '120 seconds', sync_attempts = a.sync_attempts + 1
 where a.id in (select q.id from public.appointments q
                 where q.sync_state = 'pending' and q.next_attempt_at <= now()
                 order by q.next_attempt_at limit %(limit)s
                 for update skip locked)
returning a.id, a.clinic_id, a.revision, a.reference, a.patient, a.service, a.notes, a.starts_at, a.ends_at
"""

WRITE_BACK = """
update public.appointments a
   set sync_state = 'synced', synced_revision = v.revision, synced_at = now(), next_attempt_at = null,
       calendar_event_id = v.event_id, calendar_event_link = v.link,
       lease_owner = null, lease_expires_at = null, last_sync_error = null
  from unnest(%(ids)s::uuid[], %(revisions)s::int[], %(event_ids)s::text[], %(links)s::text[])
       as v(id, revision, event_id, link)
 where a.id = v.id and a.sync_state = 'in_flight' and a.lease_owner = %(owner)s
"""


class Window:
    """Google's own rule, for threads: at most `per_minute` requests per clinic in any sliding 60 s window
    (the most any client can send without being refused)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.lock = threading.Lock()
        self.sent: dict[uuid.UUID, collections.deque[float]] = {}

    def acquire(self, key: uuid.UUID) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                sent = self.sent.setdefault(key, collections.deque())
                while sent and sent[0] <= now - 60.0:
                    sent.popleft()
                if len(sent) < self.per_minute:
                    sent.append(now)
                    return
                wait = sent[0] + 60.0 - now
            time.sleep(wait)


class Floor:
    def __init__(self, config: dict[str, Any]) -> None:
        self.dsn = str(config["dsn"])
        endpoint = urllib.parse.urlsplit(str(config["api_endpoint"]))
        self.host, self.port, self.base = endpoint.hostname or "127.0.0.1", endpoint.port or 80, endpoint.path
        self.tokens = {uuid.UUID(k): str(v) for k, v in config["tokens"].items()}
        # {clinic_id: [calendar_id, time_zone]}, read once, as any loop would cache its configuration
        self.calendars = {uuid.UUID(k): (str(v[0]), str(v[1])) for k, v in config["calendars"].items()}
        self.zones: dict[str, ZoneInfo] = {}
        self.workers = int(config["workers"])
        self.batch = int(config["batch"])
        self.expect = int(config["expect"])
        self.window = Window(int(config["requests_per_minute"]))
        self.lock = threading.Lock()
        self.synced = 0
        self.errors = 0
        self.reconnects = 0
        self.failed = False
        self.done = threading.Event()

    def run(self) -> dict[str, Any]:
        started, cpu = time.monotonic(), time.process_time()
        threads = [threading.Thread(target=self.worker, args=(n,)) for n in range(self.workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {
            "synced": self.synced,
            "errors": self.errors,
            "seconds": time.monotonic() - started,
            "cpu_seconds": time.process_time() - cpu,
            "reconnects": self.reconnects,
            "failed": self.failed,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }

    def worker(self, n: int) -> None:
        try:
            self.loop(f"floor-{n}")
        except BaseException:
            self.failed = True  # any failure ends the run: the bench sees a process that stopped short
            self.done.set()
            raise

    def loop(self, owner: str) -> None:
        conn = psycopg.connect(self.dsn, autocommit=True)
        google = http.client.HTTPConnection(self.host, self.port)
        try:
            while not self.done.is_set():
                rows = conn.execute(CLAIM, {"owner": owner, "limit": self.batch}).fetchall()
                if not rows:
                    if self.synced + self.errors >= self.expect:
                        self.done.set()
                    time.sleep(0.005)
                    continue
                ids, revisions, event_ids, links = [], [], [], []
                for row in rows:
                    result = self.insert(google, row)
                    if result is None:
                        continue
                    ids.append(row[0])
                    revisions.append(row[2])
                    event_ids.append(result[0])
                    links.append(result[1])
                if ids:
                    conn.execute(
                        WRITE_BACK,
                        {"ids": ids, "revisions": revisions, "event_ids": event_ids, "links": links, "owner": owner},
                    )
                with self.lock:
                    self.synced += len(ids)
                    self.errors += len(rows) - len(ids)
        finally:
            google.close()
            conn.close()

    def insert(self, google: http.client.HTTPConnection, row: tuple[Any, ...]) -> tuple[str, str] | None:
        appointment_id, clinic_id, revision, reference, patient, service, notes, starts_at, ends_at = row
        calendar_id, zone_name = self.calendars[clinic_id]
        zone = self.zones.setdefault(zone_name, ZoneInfo(zone_name))
        name, phone = patient.get("name", ""), patient.get("phone")
        lines = [f"Patient: {name}", *([f"Phone: {phone}"] if phone else []), f"Service: {service}"]
        lines += [f"Reference: {reference}", *([f"Notes: {notes}"] if notes else [])]
        body = {  # what the daemon sends (daemon.calendar.event_body), written out
            "id": base64.b32hexencode(appointment_id.bytes).decode().rstrip("=").lower(),
            "status": "confirmed",
            "summary": f"{service}: {name}",
            "description": "\n".join([*lines, "Booked by the clinic's phone assistant."]),
            "start": {"dateTime": starts_at.astimezone(zone).isoformat(), "timeZone": zone_name},
            "end": {"dateTime": ends_at.astimezone(zone).isoformat(), "timeZone": zone_name},
            "extendedProperties": {
                "private": {"appointmentId": str(appointment_id), "reference": reference, "revision": str(revision)}
            },
        }
        calendar = urllib.parse.quote(calendar_id, safe="")
        self.window.acquire(clinic_id)
        for attempt in range(3):
            try:
                google.request(
                    "POST",
                    f"{self.base}calendars/{calendar}/events?alt=json",
                    json.dumps(body),
                    {"authorization": f"Bearer {self.tokens[clinic_id]}", "content-type": "application/json"},
                )
                response = google.getresponse()
                payload = response.read()
                break
            except (OSError, http.client.HTTPException):
                google.close()  # reconnects on the next request
                with self.lock:
                    self.reconnects += 1
                if attempt == 2:
                    raise
        if response.status == 409 and attempt > 0:  # the lost attempt had created it
            return str(body["id"]), ""
        if response.status != 200:
            return None
        event = json.loads(payload)
        return str(event["id"]), str(event.get("htmlLink") or "")


def main() -> int:
    result = Floor(json.load(sys.stdin)).run()
    print(json.dumps(result), flush=True)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
