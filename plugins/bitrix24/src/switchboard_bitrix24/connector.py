"""What the Bitrix24 connector does with each event (docs/crm-bitrix24.md).

- ``call.ringing``: the call registered (``telephony.externalcall.register``, with the
  Bitrix24 user of an agent it rings for; Bitrix24 creates a lead for an unknown caller
  when ``create_for_unknown``), and Bitrix24's call card shown to every agent it rings for
  (``telephony.externalcall.show``). A call started from Bitrix24 (``OnExternalCallStart``)
  is registered already: it is matched to its Bitrix24 ``CALL_ID``, not registered again.
- ``call.answered``: the card hidden for the others (``telephony.externalcall.hide``).
- ``call.ended``: ``telephony.externalcall.finish`` with the user, the talk time and a
  status code, then the recording attached (``telephony.externalCall.attachRecord``) when
  it was saved; ``call.recorded`` after the finish attaches it then.
- ``message.received`` / ``message.sent``: a comment on the contact's timeline
  (``crm.timeline.comment.add``); the contact found by phone or email
  (``crm.duplicate.findbycomm``), or created (``crm.contact.add``, ``create_contacts``).

Each step is recorded in ``bitrix24_link`` (state ``registered``, ``shown``, ``finished``;
``recording`` in its data), so an event delivered again redoes only what is missing.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from switchboard import Agent, Principal, Role, SkipEvent
from switchboard.crm import (
    CrmConnector,
    CrmError,
    Link,
    customer_address,
    customer_number,
    message_lines,
    shape,
    values_of,
)
from switchboard_bitrix24.client import Bitrix24Api
from switchboard_bitrix24.settings import Bitrix24Settings
from switchboard_bitrix24.tables import links_t

if TYPE_CHECKING:
    from switchboard import Switchboard

log = logging.getLogger("switchboard.bitrix24")

#: STATUS_CODE of telephony.externalcall.finish (SIP-like, as Bitrix24 lists them).
STATUS_CODE = {
    "answered": "200",
    "missed": "304",
    "abandoned": "304",
    "voicemail": "304",
    "busy": "486",
    "failed": "503",
}
#: Who places the calls Bitrix24 asks for (acting for the agent Bitrix24 named).
CLICK_TO_CALL = Principal(name="bitrix24", role=Role.ADMIN)


class Bitrix24Connector(CrmConnector):
    name = "bitrix24"

    def __init__(self, core: Switchboard, settings: Bitrix24Settings) -> None:
        super().__init__(
            core, settings.push, settings.users, links=links_t, lookup_ttl=settings.lookup_cache_s
        )
        self.settings = settings
        self.api = Bitrix24Api(core, settings)

    async def close(self) -> None:
        await self.api.close()

    async def check_users(self) -> None:
        found: set[int] = set()
        start: Any = 0
        while start is not None:
            page = await self.api.call("user.get", {"FILTER": {"ACTIVE": True}, "start": start})
            for user in shape(page, list, "user.get", "result"):
                if isinstance(user, dict) and str(user.get("ID", "")).isdigit():
                    found.add(int(user["ID"]))
            start = None if len(page) < 50 or not page else start + 50
        default = self.settings.default_user
        self.require_users("Bitrix24", found, {} if default is None else {"default_user": default})
        if self.settings.app and self.settings.click_to_call:
            await self.bind_events()

    async def bind_events(self) -> None:
        """Ask Bitrix24 to post ``OnExternalCallStart`` to us (once per installation)."""
        installation = await self.api.installed()
        if installation.events_bound:
            return
        public = self.core.config.core.http.public_url
        if not public:
            raise CrmError("click_to_call needs [switchboard.http] public_url")
        try:
            await self.api.call(
                "event.bind",
                {
                    "event": "ONEXTERNALCALLSTART",
                    "handler": f"{public.rstrip('/')}/bitrix24/events",
                },
            )
        except SkipEvent as exc:  # bound already (a reinstall): Bitrix24 says so
            if "already" not in str(exc).lower():
                raise CrmError(str(exc)) from None
        installation.events_bound = True
        await asyncio.to_thread(self.api.save, installation)

    # -- contacts -----------------------------------------------------------------------

    async def lookup(self, address: str) -> dict[str, Any] | None:
        """Bitrix24's contact with this phone or email (cached), or None."""
        kind, _, value = address.partition(":")
        if kind not in ("phone", "email") or not value:
            return None
        return await self.lookups.fetch(address, lambda: self._find(kind.upper(), value))

    async def _find(self, kind: str, value: str) -> dict[str, Any] | None:
        found = await self.api.call(
            "crm.duplicate.findbycomm", {"entity_type": "CONTACT", "type": kind, "values": [value]}
        )
        ids = found.get("CONTACT") if isinstance(found, dict) else None  # [] when none
        if not ids:
            return None
        contact_id = shape(ids[0], int, "crm.duplicate.findbycomm", "CONTACT[0]")
        contact = shape(
            await self.api.call("crm.contact.get", {"id": contact_id}),
            dict,
            "crm.contact.get",
            "result",
        )
        return {**contact, "ID": contact_id}

    async def find_person(self, address: str) -> tuple[str | None, str | None] | None:
        found = await self.lookup(address)
        if found is None:
            return None
        name = " ".join(str(found.get(k) or "") for k in ("NAME", "LAST_NAME")).strip()
        return name or None, str(found.get("ASSIGNED_BY_ID") or "") or None

    async def contact_id(self, contact: dict[str, Any]) -> int | None:
        our_id = str(contact.get("id"))
        link = await self.links.get("contact", our_id)
        if link is not None:
            return int(link.crm_id)
        addresses = [str(a) for a in contact.get("addresses") or ()]
        for address in addresses:
            found = await self.lookup(address)
            if found is not None:
                await self.links.put("contact", our_id, found["ID"], "found")
                return int(found["ID"])
        if not self.settings.create_contacts:
            return None
        fields: dict[str, Any] = {"NAME": str(contact.get("name") or "")[:100]}
        for kind in ("phone", "email"):
            values = values_of(addresses, kind)
            if values:
                fields[kind.upper()] = [{"VALUE": v, "VALUE_TYPE": "WORK"} for v in values]
        owner = self.crm_user(contact.get("owner_agent_id"))
        if owner is not None:
            fields["ASSIGNED_BY_ID"] = int(owner)
        created = shape(
            await self.api.call("crm.contact.add", {"fields": fields}),
            int,
            "crm.contact.add",
            "result",
        )
        await self.links.put("contact", our_id, created, "created")
        for address in addresses:
            self.lookups.drop(address)
        return created

    # -- click-to-call from Bitrix24 ---------------------------------------------------------

    async def external_call_start(self, data: dict[str, str]) -> str:
        """``OnExternalCallStart``: Bitrix24's user clicked a number; ring their agent's
        phone, then the number. The call is registered in Bitrix24 already (its
        ``CALL_ID``): kept as a pending dial that ``call.ringing`` picks up."""
        agent_id = self.agent_of_user(data.get("USER_ID", ""))
        if agent_id is None:
            raise SkipEvent(f"Bitrix24 user {data.get('USER_ID')!r} is not mapped to an agent")
        call_id = data.get("CALL_ID", "")
        if not call_id or len(call_id) > 200:
            raise SkipEvent("OnExternalCallStart without a usable CALL_ID")
        to = self.core.parse_address(data.get("PHONE_NUMBER", ""))
        agent: Agent = await self.core.agent(agent_id)
        await self.links.put("dial", f"{agent_id}:{to}", call_id, "pending")
        return await self.core.place_call(CLICK_TO_CALL, agent, to=to)

    # -- calls ------------------------------------------------------------------------------

    def register_user(self, call: dict[str, Any]) -> int:
        user = self.call_user(call)
        if user is None and self.settings.default_user is not None:
            return self.settings.default_user
        if user is None:
            raise SkipEvent(f"call {call.get('call_id')}: none of its agents has a Bitrix24 user")
        return int(user)

    def notified_users(self, call: dict[str, Any]) -> list[int]:
        users = [self.crm_user(a) for a in call.get("agents_notified") or ()]
        return sorted({int(u) for u in users if u is not None})

    async def on_call_ringing(self, call: dict[str, Any], contact: dict[str, Any]) -> None:
        call_id = str(call["call_id"])
        link = await self.links.get("call", call_id)
        if link is None:
            link = await self.register(call)
        if link.state == "registered" and self.settings.show_card:
            users = self.notified_users(call)
            if users and call.get("direction") == "inbound":
                await self.api.call(
                    "telephony.externalcall.show", {"CALL_ID": link.crm_id, "USER_ID": users}
                )
            await self.links.put("call", call_id, link.crm_id, "shown", link.data)

    async def register(self, call: dict[str, Any]) -> Link:
        call_id = str(call["call_id"])
        customer = customer_address(call)
        if call.get("direction") == "outbound":  # started in Bitrix24? then known already
            for agent_id in call.get("agents_notified") or ():
                pending = await self.links.get("dial", f"{agent_id}:{customer}")
                if pending is not None and pending.state == "pending":
                    await self.links.put("dial", f"{agent_id}:{customer}", pending.crm_id, "used")
                    return await self.links.put(
                        "call", call_id, pending.crm_id, "shown", {"from_bitrix24": True}
                    )
        params: dict[str, Any] = {
            "USER_ID": self.register_user(call),
            "PHONE_NUMBER": customer_number(call),
            "TYPE": 2 if call.get("direction") == "inbound" else 1,
            "CALL_START_DATE": call.get("ringing_at") or datetime.now().isoformat(),
            "CRM_CREATE": 1 if self.settings.create_for_unknown else 0,
            "SHOW": 0,
        }
        if self.settings.line_number:
            params["LINE_NUMBER"] = self.settings.line_number
        result = shape(
            await self.api.call("telephony.externalcall.register", params),
            dict,
            "telephony.externalcall.register",
            "result",
        )
        crm_call = shape(result.get("CALL_ID"), str, "telephony.externalcall.register", "CALL_ID")
        data = {k: result.get(k) for k in ("CRM_ENTITY_TYPE", "CRM_ENTITY_ID") if result.get(k)}
        return await self.links.put("call", call_id, crm_call, "registered", data)

    async def on_call_answered(self, call: dict[str, Any]) -> None:
        link = await self.links.get("call", str(call["call_id"]))
        taker = self.crm_user(call.get("agent_id"))
        if link is None or link.data.get("hidden") or not self.settings.show_card:
            return
        others = [u for u in self.notified_users(call) if str(u) != taker]
        if others and call.get("direction") == "inbound":
            await self.api.call(
                "telephony.externalcall.hide", {"CALL_ID": link.crm_id, "USER_ID": others}
            )
        await self.links.put(
            "call", str(call["call_id"]), link.crm_id, link.state, {**link.data, "hidden": True}
        )

    async def on_call_ended(self, call: dict[str, Any]) -> None:
        call_id = str(call["call_id"])
        link = await self.links.get("call", call_id)
        if link is None:
            if not self.push.calls:
                return
            link = await self.register(call)  # its ringing came before the connector
        if link.state != "finished":
            params: dict[str, Any] = {
                "CALL_ID": link.crm_id,
                "USER_ID": self.register_user(call),
                "DURATION": round(call.get("talk_s") or 0),
                "STATUS_CODE": STATUS_CODE.get(str(call.get("disposition")), "OTHER"),
            }
            if call.get("hangup_cause") and call.get("disposition") != "answered":
                params["FAILED_REASON"] = str(call["hangup_cause"])[:255]
            await self.api.call("telephony.externalcall.finish", params)
            link = await self.links.put("call", call_id, link.crm_id, "finished", link.data)
        if call.get("recording") and self.push.recordings and not link.data.get("recording"):
            await self.attach_recording(call, link)

    async def on_call_recorded(self, call: dict[str, Any]) -> None:
        link = await self.links.get("call", str(call["call_id"]))
        if link is not None and link.state == "finished" and not link.data.get("recording"):
            await self.attach_recording(call, link)  # else call.ended attaches it

    async def attach_recording(self, call: dict[str, Any], link: Link) -> None:
        call_id = str(call["call_id"])
        params: dict[str, Any] = {"CALL_ID": link.crm_id, "FILENAME": f"{call_id}.wav"[:200]}
        data = await self.recording_bytes(call_id, self.settings.max_recording_bytes)
        if data is not None:
            params["FILE_CONTENT"] = base64.b64encode(data).decode()
        else:  # too large (or gone from disk): a link Bitrix24 fetches
            url = self.recording_link(call_id, self.settings.recording_link_days)
            if url is None:
                return
            params["RECORD_URL"] = url
        await self.api.call("telephony.externalCall.attachRecord", params)
        await self.links.put(
            "call", call_id, link.crm_id, link.state, {**link.data, "recording": True}
        )

    # -- messages ---------------------------------------------------------------------------

    async def on_message(self, interaction: dict[str, Any], contact: dict[str, Any]) -> None:
        our_id = str(interaction["id"])
        if await self.links.get("message", our_id) is not None:
            return
        crm_id = await self.contact_id(contact)
        if crm_id is None:
            log.info(
                "message %s: Bitrix24 has no contact for contact %s", our_id, contact.get("id")
            )
            return
        lines = message_lines(interaction)
        comment = await self.api.call(
            "crm.timeline.comment.add",
            {
                "fields": {
                    "ENTITY_ID": crm_id,
                    "ENTITY_TYPE": "contact",
                    "COMMENT": "\n".join(lines)[:20_000],
                }
            },
        )
        await self.links.put(
            "message",
            our_id,
            shape(comment, int, "crm.timeline.comment.add", "result"),
            "commented",
        )
