"""What the amoCRM connector does with each event (docs/crm-amocrm.md).

- ``call.ended``: the call logged (``POST /api/v4/calls``) with direction, duration,
  result, the responsible user and a signed link to its recording; an inbound call from
  a number amoCRM does not know becomes an unsorted SIP lead instead (setting).
- ``call.recorded`` after the call was logged: a note with the recording's link.
- ``message.received`` / ``message.sent``: a note on the contact (created when amoCRM has
  none, setting), emails with their subject.

amoCRM has no API to show a card on an incoming call (its widgets do that in the
browser), so ``call.ringing`` only warms the lookup cache. Every push is recorded in
``amocrm_link`` (ours: amoCRM's id), so an event delivered twice is not logged twice.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from switchboard.crm import (
    CrmConnector,
    CrmError,
    customer_address,
    customer_number,
    message_lines,
    values_of,
)
from switchboard_amocrm.client import AmoApi
from switchboard_amocrm.settings import AmoCrmSettings
from switchboard_amocrm.tables import links_t

if TYPE_CHECKING:
    from switchboard import Switchboard

log = logging.getLogger("switchboard.amocrm")

#: amoCRM's call_status: 4 the talk took place, 6 no answer, 7 busy, 3 unreachable,
#: 1 left a message.
CALL_STATUS = {
    "answered": 4,
    "missed": 6,
    "abandoned": 6,
    "busy": 7,
    "failed": 3,
    "voicemail": 1,
}


def _epoch(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        return None


def query_for(address: str) -> str | None:
    """What amoCRM's contact search takes for one of our addresses: a phone's digits
    (amoCRM matches them inside stored numbers whatever their format), an email as is."""
    kind, _, value = address.partition(":")
    if kind == "phone":
        digits = "".join(c for c in value if c.isdigit())
        return digits or None
    if kind == "email":
        return value or None
    return None


class AmoConnector(CrmConnector):
    name = "amocrm"

    def __init__(self, core: Switchboard, settings: AmoCrmSettings) -> None:
        super().__init__(
            core, settings.push, settings.users, links=links_t, lookup_ttl=settings.lookup_cache_s
        )
        self.settings = settings
        self.api = AmoApi(core, settings)

    async def close(self) -> None:
        await self.api.close()

    async def check_users(self) -> None:
        self.require_users("amoCRM", await self.api.users())

    # -- contacts -----------------------------------------------------------------------

    async def lookup(self, address: str) -> dict[str, Any] | None:
        """amoCRM's contact with this address (cached), or None."""
        query = query_for(address)
        if query is None:
            return None
        return await self.lookups.fetch(address, lambda: self.api.find_contact(query))

    async def find_person(self, address: str) -> tuple[str | None, str | None] | None:
        found = await self.lookup(address)
        if found is None:
            return None
        name = found.get("name")
        return (name if isinstance(name, str) else None), str(found.get("responsible_user_id"))

    async def crm_contact(self, contact: dict[str, Any]) -> int | None:
        """amoCRM's id of one of our contacts: linked, found by a phone or email, or
        created (``create_contacts``); None when none and not created."""
        our_id = contact.get("id")
        link = await self.links.get("contact", str(our_id))
        if link is not None:
            return int(link.crm_id)
        addresses = [str(a) for a in contact.get("addresses") or ()]
        for address in addresses:
            found = await self.lookup(address)
            if found is not None:
                await self.links.put("contact", str(our_id), found["id"], "found")
                return int(found["id"])
        if not self.settings.create_contacts:
            return None
        phones, emails = values_of(addresses, "phone"), values_of(addresses, "email")
        name = str(contact.get("name") or (phones + emails + ["unknown"])[0])
        owner = self.crm_user(contact.get("owner_agent_id"))
        crm_id = await self.api.create_contact(name, phones, emails, int(owner) if owner else None)
        await self.links.put("contact", str(our_id), crm_id, "created")
        for address in addresses:
            self.lookups.drop(address)
        return crm_id

    # -- calls ----------------------------------------------------------------------------

    async def on_call_ringing(self, call: dict[str, Any], contact: dict[str, Any]) -> None:
        if call.get("direction") == "inbound":  # warm the cache for the call's end
            await self.lookup(customer_address(call))

    def link_for(self, call: dict[str, Any]) -> str | None:
        """The signed link to put on the call in amoCRM (None: no recording, or off)."""
        if not call.get("recording") or not self.push.recordings:
            return None
        return self.recording_link(str(call["call_id"]), self.settings.recording_link_days)

    async def on_call_ended(self, call: dict[str, Any]) -> None:
        if not self.push.calls:
            return
        call_id = str(call["call_id"])
        if await self.links.get("call", call_id) is not None:
            return  # logged already: a second delivery
        customer = customer_address(call)
        phone = customer_number(call)
        link = self.link_for(call)
        user = self.call_user(call)
        item: dict[str, Any] = {
            "direction": "inbound" if call.get("direction") == "inbound" else "outbound",
            "uniq": call_id,
            "duration": round(call.get("talk_s") or 0),
            "source": self.settings.source,
            "phone": phone,
            "call_status": CALL_STATUS.get(str(call.get("disposition")), 6),
            "call_result": str(call.get("disposition") or ""),
        }
        created = _epoch(call.get("ringing_at"))
        if created is not None:
            item["created_at"] = created
        if link is not None:
            item["link"] = link
        if user is not None:
            item["responsible_user_id"] = int(user)
            item["created_by"] = int(user)
        known = await self.lookup(customer)
        if (
            known is None
            and call.get("direction") == "inbound"
            and self.settings.unsorted_for_unknown
        ):
            uid = await self.api.add_unsorted_call(self.unsorted(call, item))
            await self.links.put("call", call_id, uid, "unsorted", {"recording": link is not None})
            self.lookups.drop(customer)  # the unsorted lead made a contact
            return
        logged = await self.api.add_call(item)
        if logged is None and self.settings.create_contacts:
            await self.crm_contact({"id": call.get("contact_id"), "addresses": [customer]})
            logged = await self.api.add_call(item)
        if logged is None:
            raise CrmError(f"amoCRM found no contact for {phone!r} to log call {call_id} on")
        await self.links.put(
            "call",
            call_id,
            logged["id"],
            "logged",
            {"recording": link is not None, "entity_id": logged.get("entity_id")},
        )

    def unsorted(self, call: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
        metadata = {
            "is_call_event_needed": True,
            "uniq": item["uniq"],
            "duration": item["duration"],
            "service_code": "switchboard",
            "phone": item["phone"],
            "called_at": item.get("created_at", 0),
            "from": item["phone"],
        }
        if "link" in item:
            metadata["link"] = item["link"]
        lead: dict[str, Any] = {
            "source_uid": item["uniq"],
            "source_name": self.settings.source,
            "created_at": item.get("created_at", 0),
            "metadata": metadata,
            "_embedded": {
                "contacts": [
                    {
                        "name": item["phone"],
                        "custom_fields_values": [
                            {"field_code": "PHONE", "values": [{"value": item["phone"]}]}
                        ],
                    }
                ]
            },
        }
        if self.settings.pipeline_id is not None:
            lead["pipeline_id"] = self.settings.pipeline_id
        return lead

    async def on_call_recorded(self, call: dict[str, Any]) -> None:
        """A recording saved after the call was logged: a note with its link."""
        call_id = str(call["call_id"])
        logged = await self.links.get("call", call_id)
        if logged is None or logged.data.get("recording"):
            return  # not logged yet (call.ended carries it), or logged with it
        link = self.link_for(call)
        if link is None or logged.state != "logged":
            return
        contact = await self.crm_contact(
            {"id": call.get("contact_id"), "addresses": [customer_address(call)]}
        )
        if contact is not None:
            await self.api.add_note(contact, f"Recording of call {call_id}: {link}")
        await self.links.put(
            "call", call_id, logged.crm_id, logged.state, {**logged.data, "recording": True}
        )

    # -- messages ---------------------------------------------------------------------------

    async def on_message(self, interaction: dict[str, Any], contact: dict[str, Any]) -> None:
        our_id = str(interaction["id"])
        if await self.links.get("message", our_id) is not None:
            return
        crm_id = await self.crm_contact(contact)
        if crm_id is None:
            log.info("message %s: amoCRM has no contact for contact %s", our_id, contact.get("id"))
            return
        await self.links.put(
            "message",
            our_id,
            await self.api.add_note(crm_id, "\n".join(message_lines(interaction))[:20_000]),
            "noted",
        )
