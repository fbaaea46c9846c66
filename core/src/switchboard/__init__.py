"""Switchboard: a company's communication channels, connected to its CRM.

The public API for plugin authors is re-exported here; see ``docs/hooks.md``.
"""

from switchboard.address import Address, AddressBook, AddressError
from switchboard.auth import Principal
from switchboard.backoff import Backoff
from switchboard.channels import (
    CallControl,
    CallHandler,
    CallSession,
    CallSupervision,
    Channel,
    ChannelContext,
    ChannelState,
    InboundMessage,
    InvalidInbound,
    NotConfigured,
    OutboundMessage,
    PermanentSendError,
    Receipt,
    Received,
    SendError,
    TransientSendError,
    VoiceChannel,
)
from switchboard.config import Config, ConfigError, CoreSettings, load_config
from switchboard.consumers import EventConsumer, SkipEvent
from switchboard.core import Switchboard
from switchboard.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    SwitchboardError,
    Unavailable,
)
from switchboard.events import Event, to_json
from switchboard.files import (
    Attachment,
    FileRoots,
    attachments,
    download_file,
    new_file_path,
    safe_filename,
)
from switchboard.groupcommit import GroupCommit
from switchboard.kept import KeptBodies, Position
from switchboard.models import (
    Agent,
    CallRecord,
    Contact,
    Direction,
    Disposition,
    EventType,
    Interaction,
    InteractionKind,
    InteractionStatus,
    IvrStep,
    Recording,
    Ring,
    Role,
    Supervision,
    SupervisionMode,
)
from switchboard.outbox import Queued
from switchboard.pacing import Pacer
from switchboard.plugins import hookimpl
from switchboard.search import CallHit, CallMatch, CallSearch
from switchboard.service import KEEP, Timeline, can_hear
from switchboard.softphones import BrowserLeg, SoftphoneLink, Softphones
from switchboard.tables import UTCDateTime
from switchboard.tasks import Tasks
from switchboard.templates import Rendered, TemplateError

__version__ = "0.1.0"

__all__ = [
    "KEEP",
    "Address",
    "AddressBook",
    "AddressError",
    "Agent",
    "Attachment",
    "Backoff",
    "BrowserLeg",
    "CallControl",
    "CallHandler",
    "CallHit",
    "CallMatch",
    "CallRecord",
    "CallSearch",
    "CallSession",
    "CallSupervision",
    "Channel",
    "ChannelContext",
    "ChannelState",
    "Config",
    "ConfigError",
    "Conflict",
    "Contact",
    "CoreSettings",
    "Direction",
    "Disposition",
    "Event",
    "EventConsumer",
    "EventType",
    "FileRoots",
    "Forbidden",
    "GroupCommit",
    "InboundMessage",
    "Interaction",
    "InteractionKind",
    "InteractionStatus",
    "Invalid",
    "InvalidInbound",
    "IvrStep",
    "KeptBodies",
    "NotConfigured",
    "NotFound",
    "OutboundMessage",
    "Pacer",
    "PermanentSendError",
    "Position",
    "Principal",
    "Queued",
    "Receipt",
    "Received",
    "Recording",
    "Rendered",
    "Ring",
    "Role",
    "SendError",
    "SkipEvent",
    "SoftphoneLink",
    "Softphones",
    "Supervision",
    "SupervisionMode",
    "Switchboard",
    "SwitchboardError",
    "Tasks",
    "TemplateError",
    "Timeline",
    "TransientSendError",
    "UTCDateTime",
    "Unavailable",
    "VoiceChannel",
    "attachments",
    "can_hear",
    "download_file",
    "hookimpl",
    "load_config",
    "new_file_path",
    "safe_filename",
    "to_json",
]
