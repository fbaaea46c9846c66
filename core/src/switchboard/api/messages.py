"""``/api/messages`` and ``/api/templates``: queue a message, preview a template."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import Field, model_validator

from switchboard.address import AddressError
from switchboard.api.common import (
    ONE_LINE,
    Accepted,
    Body,
    Caller,
    Core,
    RowId,
    call_or_404,
    contact_or_404,
    parse_address,
    run,
)
from switchboard.auth import Principal
from switchboard.core import Switchboard
from switchboard.events import to_json
from switchboard.models import Interaction, InteractionKind
from switchboard.templates import TemplateError

router = APIRouter(prefix="/api")


class MessageIn(Body):
    channel: str
    contact_id: RowId | None = None
    address: str | None = None
    text: str | None = Field(default=None, max_length=100_000)
    subject: str | None = Field(default=None, max_length=998, pattern=ONE_LINE)
    html: str | None = Field(
        default=None, max_length=1_000_000, description="an HTML alternative (email)"
    )
    in_reply_to: str | None = Field(
        default=None,
        max_length=998,
        pattern=r"^<[^<>\s]+>$",
        description="the Message-ID this email answers (email threading)",
    )
    references: str | None = Field(
        default=None, max_length=8000, pattern=ONE_LINE, description="Message-IDs (email)"
    )
    template: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    call_id: str | None = Field(
        default=None, description="a call whose record the template sees as `call`"
    )

    @model_validator(mode="after")
    def _one_of(self) -> MessageIn:
        if self.contact_id is None and self.address is None:
            raise ValueError("give contact_id or address")
        if (self.text is None) == (self.template is None):
            raise ValueError("give text or template (not both)")
        return self


# -- messages -------------------------------------------------------------------------------


@router.post("/messages", status_code=202)
async def send_message(body: MessageIn, sb: Core, who: Caller) -> Accepted:
    """Queue a message (the outbox sends it, with retries); 202 with the interaction id."""
    interaction = await queue_message(sb, who, body)
    return Accepted(id=interaction.id, status=interaction.status.value)


async def queue_message(sb: Switchboard, who: Principal, body: MessageIn) -> Interaction:
    """Render the template (if any) and queue the message; HTTPException on bad input (also
    used by the console's pages)."""
    text, subject = body.text, body.subject
    payload: dict[str, Any] = {
        k: v
        for k, v in (
            ("html", body.html),
            ("in_reply_to", body.in_reply_to),
            ("references", body.references),
        )
        if v is not None
    }
    if body.template is not None:
        rendered = await _render(
            sb,
            who,
            body.template,
            body.contact_id,
            body.address,
            body.variables,
            body.call_id,
        )
        text, subject = rendered.text, subject or rendered.subject
        payload["template"] = body.template
        if rendered.html is not None:
            payload["html"] = rendered.html
    try:
        interaction = await sb.outbox.enqueue(
            body.channel,
            contact_id=body.contact_id,
            address=body.address,
            text=text,
            subject=subject,
            payload=payload,
            kind=InteractionKind.EMAIL if subject is not None else InteractionKind.MESSAGE,
        )
    except AddressError as exc:
        raise HTTPException(
            422, [{"loc": ["body", "address"], "msg": str(exc), "type": "address"}]
        ) from None
    return interaction


async def _render(
    sb: Switchboard,
    who: Principal,
    template: str,
    contact_id: int | None,
    address: str | None,
    variables: dict[str, Any],
    call_id: str | None = None,
) -> Any:
    """Render a template for a contact (or a bare address), the calling agent and, if
    given, a call (``call``: its record, e.g. for a follow-up after it); 422 with the
    template's error (unknown template, missing variable...)."""
    contact = await contact_or_404(sb, contact_id) if contact_id is not None else None
    call = await call_or_404(sb, call_id) if call_id is not None else None
    to = parse_address(sb, address, "address") if address is not None else None
    try:
        return sb.render(
            template, contact=contact, address=to, agent=who.agent, call=call, variables=variables
        )
    except TemplateError as exc:
        raise HTTPException(
            422, [{"loc": ["body", "template"], "msg": str(exc), "type": "template"}]
        ) from None


class PreviewIn(Body):
    contact_id: RowId | None = None
    address: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    call_id: str | None = None


@router.get("/templates")
async def list_templates(sb: Core, who: Caller) -> dict[str, Any]:
    """The configured message templates' names."""
    return {"items": list(sb.templates.names)}


@router.post("/templates/{name}/preview")
async def preview_template(name: str, body: PreviewIn, sb: Core, who: Caller) -> dict[str, Any]:
    """Render a template as it would be sent (subject, text, html), sending nothing."""
    rendered = await _render(
        sb, who, name, body.contact_id, body.address, body.variables, body.call_id
    )
    return {"subject": rendered.subject, "text": rendered.text, "html": rendered.html}


@router.get("/messages/{interaction_id}")
async def get_message(interaction_id: RowId, sb: Core, who: Caller) -> dict[str, Any]:
    interaction = await run(sb.store.get_interaction, interaction_id)
    if interaction is None or interaction.kind is InteractionKind.CALL:
        raise HTTPException(404, f"no message with id {interaction_id}")
    return to_json(interaction)  # type: ignore[no-any-return]
