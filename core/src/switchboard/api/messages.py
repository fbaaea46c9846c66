"""``/api/messages`` and ``/api/templates``: queue a message, preview a template."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import FileResponse
from pydantic import Field, model_validator

from switchboard.api.common import (
    ONE_LINE,
    Accepted,
    Body,
    Caller,
    Core,
    RowId,
    parse_address,
    run,
)
from switchboard.auth import Principal
from switchboard.core import Switchboard
from switchboard.events import to_json
from switchboard.files import Attachment, shown_as
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
    """Render the template (if any) and queue the message; 422 naming the field for an
    address or a template that does not work."""
    address = parse_address(sb, body.address, "body.address") if body.address else None
    payload = {
        k: v
        for k, v in (
            ("html", body.html),
            ("in_reply_to", body.in_reply_to),
            ("references", body.references),
        )
        if v is not None
    }
    with template_errors():
        return await sb.send_message(
            who,
            body.channel,
            contact_id=body.contact_id,
            address=address,
            text=body.text,
            subject=body.subject,
            template=body.template,
            variables=body.variables,
            call_id=body.call_id,
            payload=payload,
        )


@router.get("/interactions/{interaction_id}/attachments/{index}")
async def get_attachment(
    interaction_id: RowId,
    sb: Core,
    who: Caller,
    index: int = Path(ge=0, le=999, description="the file's place in the message's attachments"),
) -> FileResponse:
    """A file a message carried (its ``attachments[index]`` on the timeline)."""
    return attachment_response(*await sb.attachment(interaction_id, index))


def attachment_response(attachment: Attachment, path: pathlib.Path) -> FileResponse:
    """A message's file: shown in place when it is a picture, sound or video, else a
    download; its type is the sender's word, so the browser is told not to guess
    (``nosniff``) and to run nothing in it (``sandbox``)."""
    inline = shown_as(attachment.mime_type) is not None
    return FileResponse(
        path,
        media_type=attachment.mime_type if inline else "application/octet-stream",
        filename=attachment.name,
        content_disposition_type="inline" if inline else "attachment",
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"},
    )


@contextmanager
def template_errors() -> Iterator[None]:
    """A template's error (unknown template, missing variable...) as 422 naming it."""
    try:
        yield
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
    address = parse_address(sb, body.address, "address") if body.address else None
    with template_errors():
        rendered = await sb.render_for(
            who,
            name,
            contact_id=body.contact_id,
            address=address,
            variables=body.variables,
            call_id=body.call_id,
        )
    return {"subject": rendered.subject, "text": rendered.text, "html": rendered.html}


@router.get("/messages/{interaction_id}")
async def get_message(interaction_id: RowId, sb: Core, who: Caller) -> dict[str, Any]:
    interaction = await run(sb.store.get_interaction, interaction_id)
    if interaction is None or interaction.kind is InteractionKind.CALL:
        raise HTTPException(404, f"no message with id {interaction_id}")
    return to_json(interaction)  # type: ignore[no-any-return]
