"""Speech analytics: real-time factor per backend, the talk metrics' speed, and transcript
search over 100,000 transcribed calls.

- rtf: a 2-minute two-sided call made of espeak-ng sentences (both speakers, pauses and
  an interruption, about 60 % of it talk) analysed in this process, as a worker does:
  call-audio seconds per CPU second, with and without transcription. vosk and
  faster-whisper are timed when a model folder is given (--vosk-model, --whisper-model).
- search: N calls (the analytics bench's call log) with 8 transcript turns each, words
  drawn from a 5,000-word vocabulary by Zipf's law; 300 queries (rare words, common
  words, two-word phrases), each through ``Speech.search`` as ``GET /api/calls?q=``
  calls it; p50/p99 per database.

    uv run python bench/speech_bench.py [--part rtf,search] [--calls 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import database, machine, percentile
from analytics_bench import fill

from switchboard.testing import open_switchboard
from switchboard_speech import SpeechPlugin
from switchboard_speech.tables import segment_t
from switchboard_speech.testing import Line, conversation, word_error_rate
from switchboard_speech.work import analyse

AGENT = [
    "Good morning, thank you for calling Acme. My name is Alice.",
    "Let me check your order in our system.",
    "The price is two hundred dollars per month.",
    "I can schedule a demo for next Tuesday.",
    "Is there anything else I can help you with?",
    "Thank you for your patience.",
]
CUSTOMER = [
    "Hello, I have a problem with my order.",
    "It was delivered to the wrong address.",
    "That sounds expensive for a small team.",
    "Yes, Tuesday works for me.",
    "No, that is all, thank you.",
]


def script(seconds: float) -> list[Line]:
    lines, t, i = [], 0.8, 0
    while t < seconds - 6:
        agent = i % 2 == 0
        text = (AGENT if agent else CUSTOMER)[(i // 2) % (len(AGENT) if agent else len(CUSTOMER))]
        lines.append(Line("agent" if agent else "customer", t, text))
        t += 3.2 + (0.7 if i % 3 else -0.6)  # now and then one starts before the other ends
        i += 1
    return lines


def options(backend: str, model: str | None, transcribe: bool) -> dict[str, Any]:
    return {
        "backend": backend,
        "model_dir": model,
        "language": "en",
        "transcribe": transcribe,
        "max_seconds": 4 * 3600.0,
        "monologue_gap_s": 2.0,
        "vad": {"aggressiveness": 2, "pause_s": 0.5, "min_talk_s": 0.12},
    }


def rtf(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "call.wav"
        said = conversation(wav, script(120), 120)
        talk = sum(s.end - s.start for s in said)
        print(f"  a 120 s call, {len(said)} sentences, {talk:.0f} s of talk on the two sides")
        runs = [("metrics only (VAD)", "pocketsphinx", None, False)]
        runs.append(("pocketsphinx (built-in en-us)", "pocketsphinx", None, True))
        if args.vosk_model:
            runs.append(("vosk", "vosk", args.vosk_model, True))
        if args.whisper_model:
            runs.append(("faster-whisper", "whisper", args.whisper_model, True))
        for label, backend, model, transcribe in runs:
            analyse(str(wav), options(backend, model, transcribe))  # the model loads once
            times = []
            for _ in range(args.repeat):
                started = time.process_time()
                found = analyse(str(wav), options(backend, model, transcribe))
                times.append(time.process_time() - started)
            cpu = statistics.median(times)
            line = f"    {label}: {cpu:.3f} CPU s, {120 / cpu:,.1f}x real time"
            if transcribe:
                ref = " ".join(s.text for s in said)
                hyp = " ".join(s["text"] for s in found["segments"])
                line += f", WER {word_error_rate(ref, hyp):.0%}"
            print(line, flush=True)


VOCABULARY_SIZE = 5000


def vocabulary() -> list[str]:
    rng = random.Random(3)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words: set[str] = set()
    while len(words) < VOCABULARY_SIZE:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))))
    return sorted(words, key=lambda w: (len(w), w))  # short words are the common ones


async def search(args: argparse.Namespace) -> None:
    words = vocabulary()
    weights = [1 / (rank + 1) for rank in range(len(words))]
    rng = random.Random(11)
    for backend in args.backends.split(","):
        with database(backend) as url, tempfile.TemporaryDirectory() as folder:
            sb = await open_switchboard(
                folder, SpeechPlugin(), config={"switchboard": {"database_url": url}}, start=False
            )
            started = time.perf_counter()
            fill(sb.store, args.calls)
            batch = []
            for i in range(args.calls):
                for turn in range(8):
                    text = " ".join(rng.choices(words, weights, k=rng.randint(6, 18)))
                    batch.append(
                        {
                            "call_id": f"bench-{i}",
                            "speaker": "agent" if turn % 2 else "customer",
                            "start": turn * 6.0,
                            "end": turn * 6.0 + 5,
                            "text": text,
                            "words": [],
                            "language": "en",
                        }
                    )
                if len(batch) >= 40_000 or i == args.calls - 1:
                    rows = batch
                    await sb.transaction(lambda c, rows=rows: c.execute(segment_t.insert(), rows))
                    batch = []
            await sb.transaction(  # each call's analysis row, as the workers write it
                lambda c: c.exec_driver_sql(
                    "INSERT INTO speech_result (call_id, status, channel, agent_id, contact_id,"
                    " call_at, language, backend, transcribed, metrics, score, rules, analysed_at)"
                    " SELECT c.call_id, 'done', c.channel, c.agent_id, i.contact_id, c.ringing_at,"
                    " 'en', 'pocketsphinx', true, '{}', 50, '[]', c.ringing_at"
                    " FROM call_record c JOIN interaction i ON i.id = c.interaction_id"
                )
            )
            if backend == "postgresql":
                await sb.transaction(
                    lambda c: c.exec_driver_sql(
                        "UPDATE speech_segment SET tsv = to_tsvector('english', text)"
                    )
                )
                with sb.store.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT"
                ) as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE")
            print(
                f"  {backend}: {args.calls:,} calls, {args.calls * 8:,} turns filled in "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
            speech = sb.plugin("speech").speech  # type: ignore[union-attr]
            kinds = {
                "rare word": lambda: rng.choice(words[1000:]),
                "common word": lambda: rng.choice(words[10:100]),
                "two words": lambda: f"{rng.choice(words[100:1000])} {rng.choice(words[100:2000])}",
            }
            for kind, make in kinds.items():
                times, found = [], 0
                for _ in range(100):
                    q = make()
                    t0 = time.perf_counter()
                    hits = await speech.search(q, limit=50)
                    times.append(time.perf_counter() - t0)
                    found += len(hits)
                print(
                    f"    {kind}: p50 {percentile(times, 50) * 1000:.1f} ms, "
                    f"p99 {percentile(times, 99) * 1000:.1f} ms, {found / 100:.1f} calls per query",
                    flush=True,
                )
            await sb.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", default="rtf,search")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--vosk-model")
    parser.add_argument("--whisper-model")
    args = parser.parse_args()
    print(f"Speech analytics on {machine()}, {datetime.now():%Y-%m-%d}")
    if "rtf" in args.part:
        rtf(args)
    if "search" in args.part:
        asyncio.run(search(args))


if __name__ == "__main__":
    main()
