"""``[plugins.speech]``: which backend transcribes, with which models, what is analysed,
the scoring rules, and how long transcripts are kept. See docs/speech.md."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import attrs

from switchboard import CoreSettings
from switchboard_speech.backends import BUILT_IN, MODULES
from switchboard_speech.scoring import Rule

#: A PostgreSQL text-search configuration's name, as the search puts it into its SQL.
CONFIG_NAME = re.compile(r"[a-z_]{1,40}")

#: PostgreSQL text-search configurations by language (``search_configs`` adds to them).
SEARCH_CONFIGS = {
    "en": "english",
    "ru": "russian",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
}


@attrs.define
class SpeechSettings:
    enabled: bool = True  # false: no jobs are queued or run
    backend: str = "pocketsphinx"  # pocketsphinx | vosk | whisper | module:callable
    language: str = "en"  # the calls' language, unless agent_languages says otherwise
    #: model folder by language ("en", "ru"...); pocketsphinx has English built in
    models: dict[str, str] = attrs.Factory(dict)
    agent_languages: dict[str, str] = attrs.Factory(dict)  # agent name -> language
    workers: int = 1  # worker processes (each transcribes one recording at a time)
    transcribe: bool = True  # false: talk metrics only, for every call
    channels: list[str] = attrs.Factory(list)  # transcribe only these channels' calls
    agents_off: list[str] = attrs.Factory(list)  # never transcribe these agents' calls
    retention_days: float = 0.0  # transcripts older than this are deleted (0: kept)
    max_attempts: int = 3  # a job that failed this often for a passing reason: failed
    lease_seconds: float = 120.0  # a worker's claim on a job, renewed while it works
    max_seconds: float = 4 * 3600.0  # only this much of a longer recording is analysed
    #: the detector's settings: 0 (lenient) to 3 (strict); pauses shorter than pause_s
    #: stay inside a turn; a turn is at least min_talk_s long
    vad_aggressiveness: int = 2
    pause_s: float = 0.5
    min_talk_s: float = 0.12
    monologue_gap_s: float = 2.0
    search_configs: dict[str, str] = attrs.Factory(dict)  # language -> PostgreSQL config
    rules: list[Rule] = attrs.Factory(list)

    def model_dir(self, language: str) -> str | None:
        return self.models.get(language)

    def search_config(self, language: str) -> str:
        return {**SEARCH_CONFIGS, **self.search_configs}.get(language, "simple")

    def languages(self) -> set[str]:
        return {self.language, *self.agent_languages.values()}

    def check_config(self, core: CoreSettings, base_dir: Path | None) -> list[str]:
        problems: list[str] = []
        if self.backend not in BUILT_IN and ":" not in self.backend:
            problems.append(
                f"backend: {self.backend!r} is none of {', '.join(BUILT_IN)} "
                "(or module:callable for a backend of your own)"
            )
        module = MODULES.get(self.backend, self.backend.partition(":")[0])
        if self.enabled and self.transcribe and importlib.util.find_spec(module) is None:
            extra = {"vosk": "switchboard-speech[vosk]", "whisper": "switchboard-speech[whisper]"}
            problems.append(
                f"backend: {self.backend} needs the module {module!r}: pip install "
                f"{extra.get(self.backend, module)}"
            )
        for language, folder in list(self.models.items()):
            path = Path(folder)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            if not path.is_dir():
                problems.append(
                    f"models.{language}: no such folder: {path} (download a model: docs/speech.md)"
                )
            self.models[language] = str(path)
        if self.enabled and self.transcribe:
            for language in sorted(self.languages()):
                built_in = self.backend == "pocketsphinx" and language == "en"
                if language not in self.models and not built_in and ":" not in self.backend:
                    problems.append(
                        f"models.{language}: the {self.backend} backend needs a model folder "
                        f"for {language!r} (language or agent_languages asks for it)"
                    )
        names = {a.name for a in core.agents}
        for name in (*self.agent_languages, *self.agents_off):
            if name not in names:
                problems.append(f"agent_languages/agents_off: no agent named {name!r}")
        if not 1 <= self.workers <= 64:
            problems.append("workers: 1 to 64")
        if not 0 <= self.vad_aggressiveness <= 3:
            problems.append("vad_aggressiveness: 0 to 3")
        if self.lease_seconds < 3:
            problems.append("lease_seconds: at least 3")
        if self.max_attempts < 1:
            problems.append("max_attempts: at least 1")
        for language, config in self.search_configs.items():
            if not CONFIG_NAME.fullmatch(config):
                problems.append(
                    f"search_configs.{language}: a PostgreSQL text-search configuration's "
                    f"name (a-z and _), not {config!r}"
                )
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            problems += rule.problems(f"rules[{i}]")
            if rule.name in seen:
                problems.append(f"rules[{i}].name: {rule.name!r} twice")
            seen.add(rule.name)
        return problems

    def options(self, language: str, transcribe: bool) -> dict[str, Any]:
        """What a worker process needs for one recording (plain values: it is pickled)."""
        return {
            "backend": self.backend,
            "model_dir": self.model_dir(language),
            "language": language,
            "transcribe": transcribe,
            "max_seconds": self.max_seconds,
            "monologue_gap_s": self.monologue_gap_s,
            "vad": {
                "aggressiveness": self.vad_aggressiveness,
                "pause_s": self.pause_s,
                "min_talk_s": self.min_talk_s,
            },
        }
