"""Templates' per-channel payloads: rendered like the text, their errors named."""

from __future__ import annotations

import pytest

from switchboard.config import TemplateSettings
from switchboard.templates import TemplateError, Templates

CARD = {
    "whatsapp_template": {
        "name": "card_{{ kind }}",
        "components": [{"type": "body", "parameters": [{"text": "{{ contact.name }}"}]}],
        "ttl": 3600,
    }
}


def test_a_channels_payload_is_rendered_like_the_text() -> None:
    templates = Templates(
        {"t": TemplateSettings(text="Hi {{ contact.name }}", channels={"whatsapp": CARD})}
    )
    rendered = templates.render("t", {"contact": {"name": "Olga"}, "kind": "gold"})
    assert rendered.text == "Hi Olga"
    assert rendered.payloads == {
        "whatsapp": {
            "whatsapp_template": {
                "name": "card_gold",
                "components": [{"type": "body", "parameters": [{"text": "Olga"}]}],
                "ttl": 3600,  # not a string: as given
            }
        }
    }
    with pytest.raises(TemplateError, match="kind"):
        templates.render("t", {"contact": {"name": "Olga"}})


def test_a_syntax_error_in_a_channels_payload_is_named_at_start() -> None:
    broken = {"whatsapp": {"whatsapp_template": {"name": "{{ oops"}}}
    templates = Templates({"t": TemplateSettings(text="x", channels=broken)})
    assert list(templates.errors) == ["t.channels.whatsapp.whatsapp_template.name"]
