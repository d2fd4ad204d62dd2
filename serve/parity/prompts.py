"""The prompts `serve parity` sends: a built-in set, or a file (one prompt per line, or JSONL)."""

from __future__ import annotations

import json
from pathlib import Path

from serve.errors import KitError

# Short and varied (fact, arithmetic, list, prose, translation, code) so that a drift shows up in a
# few dozen tokens: a CPU build decodes a 135M model at ~13 tok/s, a 27B one on a GPU at ~60-100.
BUILTIN_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "What is 2 + 3?",
    "Name three primary colors.",
    "Write one sentence about the sea.",
    "Translate 'good morning' into Spanish.",
    "List the days of the week.",
    "What is the opposite of hot?",
    "Write a Python function that adds two numbers.",
)

JSONL_SUFFIXES = (".jsonl", ".ndjson")


def parse_prompts(text: str, source: str, *, jsonl: bool) -> list[str]:
    """Plain text: every non-blank line is a prompt. JSONL: every non-blank line is a JSON string or
    an object with a string ``prompt``."""
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if not jsonl:
            prompts.append(line.strip())
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KitError(
                f"{source} line {number}: not JSON ({exc.msg}); each line is a JSON string or "
                '{"prompt": "..."} (or use a .txt file, one prompt per line)'
            ) from None
        if isinstance(item, dict):
            item = item.get("prompt")
        if not isinstance(item, str) or not item.strip():
            raise KitError(
                f"{source} line {number}: expected a non-empty string or an object with a string "
                f'"prompt", got {line.strip()[:80]!r}'
            )
        prompts.append(item)
    if not prompts:
        raise KitError(f"{source}: no prompts in it (blank lines are skipped); give one prompt per line")
    return prompts


def load_prompts(path: str | None) -> list[str]:
    if path is None:
        return list(BUILTIN_PROMPTS)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KitError(f"--prompts {path}: no such file") from None
    except IsADirectoryError:
        raise KitError(f"--prompts {path}: is a directory; give a file with one prompt per line") from None
    except UnicodeDecodeError as exc:
        raise KitError(f"--prompts {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise KitError(f"--prompts {path}: cannot read it ({exc.strerror})") from None
    return parse_prompts(text, f"--prompts {path}", jsonl=file.suffix.lower() in JSONL_SUFFIXES)
