"""What the Odoo connector does with each event (docs/crm-odoo.md).

- ``call.ended``: a note in the partner's chatter (``message_post``, subtype
  ``mail.mt_note``) saying who called whom, who answered, how long, how it ended, with the
  recording attached (``ir.attachment``) when it was saved; a caller Odoo does not know
  becomes a partner (and a CRM lead, ``leads_for_unknown``).
- ``call.recorded`` after that note: another note with the recording.
- ``message.received`` / ``message.sent``: a chatter note with the text (emails with
  their subject), on the writer's partner (created when Odoo has none, setting).

Partners are found by ``phone_sanitized`` (E.164, kept by Odoo for every partner since
13.0) where the database has it, else by ``phone``/``mobile``, and by email. From 17.0
``message_post`` escapes a body unless ``body_is_html`` is set: the connector escapes our
text itself and sets it. Every push is recorded in ``odoo_link``, so an event delivered
twice is not posted twice.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from switchboard import SkipEvent
from switchboard.crm import (
    CrmConnector,
    customer_address,
    customer_number,
    message_lines,
    shape,
)
from switchboard_odoo.rpc import OdooRpc
from switchboard_odoo.settings import OdooSettings
from switchboard_odoo.tables import links_t

if TYPE_CHECKING:
    from switchboard import Switchboard

log = logging.getLogger("switchboard.odoo")

PARTNER_FIELDS = ["id", "name", "user_id"]
OUTCOME = {
    "answered": "answered",
    "missed": "missed",
    "abandoned": "abandoned by the caller",
    "busy": "busy",
    "failed": "failed",
    "voicemail": "voicemail left",
}


def _duration(seconds: Any) -> str:
    total = round(seconds or 0)
    return f"{total // 60} min {total % 60} s" if total >= 60 else f"{total} s"


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{html.escape(line)}</p>" for line in text.splitlines() if line) or ""


class OdooConnector(CrmConnector):
    name = "odoo"

    def __init__(self, core: Switchboard, settings: OdooSettings) -> None:
        super().__init__(
            core, settings.push, settings.users, links=links_t, lookup_ttl=settings.lookup_cache_s
        )
        self.settings = settings
        self.rpc = OdooRpc(settings)
        self.partner_fields: set[str] = set()
        self.user_names: dict[int, str] = {}

    async def close(self) -> None:
        await self.rpc.close()

    async def check_users(self) -> None:
        await self.rpc.login()
        fields = await self.rpc.execute("res.partner", "fields_get", [], {"attributes": ["type"]})
        self.partner_fields = set(shape(fields, dict, "res.partner.fields_get", "result"))
        wanted = sorted({int(u) for u in self.users.values()})
        found = shape(
            await self.rpc.execute(
                "res.users", "search_read", [[("id", "in", wanted)]], {"fields": ["id", "name"]}
            ),
            list,
            "res.users.search_read",
            "result",
        )
        self.user_names = {u["id"]: str(u.get("name")) for u in found if isinstance(u, dict)}
        self.require_users("Odoo", self.user_names)

    # -- partners ---------------------------------------------------------------------------

    def _domain(self, address: str) -> list[Any] | None:
        kind, _, value = address.partition(":")
        if kind == "email" and value:
            return [("email", "=ilike", value)]
        if kind != "phone" or not value:
            return None
        if "phone_sanitized" in self.partner_fields or not self.partner_fields:
            return [("phone_sanitized", "=", value)]
        if "mobile" in self.partner_fields:  # before phone_sanitized; gone in Odoo 19
            return ["|", ("phone", "=", value), ("mobile", "=", value)]
        return [("phone", "=", value)]

    async def lookup(self, address: str) -> dict[str, Any] | None:
        """Odoo's partner with this address (cached), or None."""
        domain = self._domain(address)
        if domain is None:
            return None
        return await self.lookups.fetch(address, lambda: self._search(domain))

    async def _search(self, domain: list[Any]) -> dict[str, Any] | None:
        what = "res.partner.search_read"
        found = shape(
            await self.rpc.execute(
                "res.partner", "search_read", [domain], {"fields": PARTNER_FIELDS, "limit": 1}
            ),
            list,
            what,
            "result",
        )
        if not found:
            return None
        partner = shape(found[0], dict, what, "a partner")
        shape(partner.get("id"), int, what, "partner.id")
        return partner

    async def find_person(self, address: str) -> tuple[str | None, str | None] | None:
        found = await self.lookup(address)
        if found is None:
            return None
        user = found.get("user_id")  # [id, name] or False
        name = found.get("name")
        return (
            name if isinstance(name, str) else None,
            str(user[0]) if isinstance(user, list) and user else None,
        )

    async def partner(self, contact_id: Any, addresses: list[str], name: str) -> tuple[int, bool]:
        """The partner of one of our contacts: linked, found, or created; and whether it
        was created now (an unknown writer or caller). SkipEvent when none may be made."""
        link = await self.links.get("contact", str(contact_id))
        if link is not None:
            return int(link.crm_id), False
        for address in addresses:
            found = await self.lookup(address)
            if found is not None:
                await self.links.put("contact", str(contact_id), found["id"], "found")
                return int(found["id"]), False
        if not self.settings.create_partners:
            raise SkipEvent(f"Odoo has no partner for contact {contact_id} (create_partners off)")
        values: dict[str, Any] = {"name": name[:200]}
        for address in addresses:
            kind, _, value = address.partition(":")
            if kind in ("phone", "email") and kind not in values:
                values[kind] = value
        created = shape(
            await self.rpc.execute("res.partner", "create", [values]),
            int,
            "res.partner.create",
            "result",
        )
        await self.links.put("contact", str(contact_id), created, "created")
        for address in addresses:
            self.lookups.drop(address)
        return created, True

    async def post(
        self,
        model: str,
        record: int,
        body: str,
        *,
        subject: str | None = None,
        attachments: Sequence[int] = (),
    ) -> int:
        kwargs: dict[str, Any] = {
            "body": body,
            "message_type": "comment",
            "subtype_xmlid": "mail.mt_note",
        }
        if self.rpc.version >= (17, 0):
            kwargs["body_is_html"] = True  # else 17+ escapes it: our text is escaped here
        if subject:
            kwargs["subject"] = subject
        if attachments:
            kwargs["attachment_ids"] = list(attachments)
        return shape(
            await self.rpc.execute(model, "message_post", [[record]], kwargs),
            int,
            f"{model}.message_post",
            "result",
        )

    # -- calls ------------------------------------------------------------------------------

    async def on_call_ringing(self, call: dict[str, Any], contact: dict[str, Any]) -> None:
        await self.lookup(customer_address(call))  # warm the cache for the call's end

    async def recording_part(self, call: dict[str, Any], partner: int) -> tuple[list[int], str]:
        """The recording as an attachment id (or a link line when too large or off)."""
        if not call.get("recording") or not self.push.recordings:
            return [], ""
        call_id = str(call["call_id"])
        state = await self.links.get("recording", call_id)
        if state is not None:  # made in an earlier attempt at this event
            return [int(state.crm_id)], ""
        data = None
        if self.settings.attach_recordings:
            data = await self.recording_bytes(call_id, self.settings.max_recording_bytes)
        if data is not None:
            attachment = shape(
                await self.rpc.execute(
                    "ir.attachment",
                    "create",
                    [
                        {
                            "name": f"call-{call_id}.wav"[:200],
                            "datas": base64.b64encode(data).decode(),
                            "mimetype": "audio/wav",
                            "res_model": "res.partner",
                            "res_id": partner,
                        }
                    ],
                ),
                int,
                "ir.attachment.create",
                "result",
            )
            await self.links.put("recording", call_id, attachment, "attached")
            return [attachment], ""
        link = self.recording_link(call_id, self.settings.recording_link_days)
        if link is None:
            return [], ""
        return [], f'<p>Recording: <a href="{html.escape(link)}">{html.escape(link)}</a></p>'

    def call_body(self, call: dict[str, Any]) -> str:
        inbound = call.get("direction") == "inbound"
        customer = customer_number(call)
        user = self.call_user(call)
        who = self.user_names.get(int(user)) if user else None
        outcome = OUTCOME.get(str(call.get("disposition")), str(call.get("disposition")))
        line = f"{'Inbound call from' if inbound else 'Outbound call to'} {customer}: {outcome}"
        if call.get("agent_id") is not None and who:
            line += f" by {who}"
        if call.get("talk_s"):
            line += f", talked {_duration(call['talk_s'])}"
        return f"<p>{html.escape(line)}</p>"

    async def on_call_ended(self, call: dict[str, Any]) -> None:
        if not self.push.calls:
            return
        call_id = str(call["call_id"])
        if await self.links.get("call", call_id) is not None:
            return
        customer = customer_address(call)
        partner, created = await self.partner(
            call.get("contact_id"), [customer], customer_number(call)
        )
        attachments, extra = await self.recording_part(call, partner)
        body = self.call_body(call) + extra
        message = await self.post("res.partner", partner, body, attachments=attachments)
        data: dict[str, Any] = {"partner": partner, "recording": bool(attachments or extra)}
        if created and self.settings.leads_for_unknown and call.get("direction") == "inbound":
            data["lead"] = await self.lead(call, partner, body)
        await self.links.put("call", call_id, message, "posted", data)

    async def lead(self, call: dict[str, Any], partner: int, body: str) -> int:
        phone = customer_address(call).partition(":")[2]
        values: dict[str, Any] = {
            "name": f"Call from {phone or 'an unknown number'}",
            "partner_id": partner,
            "type": "lead",
            "description": body,
        }
        if phone:
            values["phone"] = phone
        user = self.call_user(call)
        if user is not None:
            values["user_id"] = int(user)
        return shape(
            await self.rpc.execute("crm.lead", "create", [values]), int, "crm.lead.create", "result"
        )

    async def on_call_recorded(self, call: dict[str, Any]) -> None:
        call_id = str(call["call_id"])
        posted = await self.links.get("call", call_id)
        if posted is None or posted.data.get("recording"):
            return  # not posted yet (call.ended carries it), or posted with it
        partner = int(posted.data["partner"])
        attachments, extra = await self.recording_part(call, partner)
        if not attachments and not extra:
            return
        await self.post(
            "res.partner",
            partner,
            f"<p>{html.escape(f'Recording of the call {call_id}')}</p>{extra}",
            attachments=attachments,
        )
        await self.links.put(
            "call", call_id, posted.crm_id, posted.state, {**posted.data, "recording": True}
        )

    # -- messages ---------------------------------------------------------------------------

    async def on_message(self, interaction: dict[str, Any], contact: dict[str, Any]) -> None:
        our_id = str(interaction["id"])
        if await self.links.get("message", our_id) is not None:
            return
        addresses = [str(a) for a in contact.get("addresses") or ()]
        partner, _ = await self.partner(
            contact.get("id"), addresses, str(contact.get("name") or addresses[0])
        )
        head, *rest = message_lines({**interaction, "subject": None})  # Odoo has a field
        body = f"<p><b>{html.escape(head)}</b></p>" + _paragraphs("\n".join(rest))
        message = await self.post(
            "res.partner", partner, body, subject=interaction.get("subject") or None
        )
        await self.links.put("message", our_id, message, "posted")
