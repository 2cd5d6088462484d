"""Descriptor generation with an LLM through any OpenAI-compatible chat endpoint.

For each class the LLM is asked, with a system and a user message, for exactly n Spatio
(static cues of a single frame) or Temporal (the action's steps) descriptors. The defaults are
the paper's own prompts, verbatim (Fig. 9 Spatio, Fig. 10 Temporal), sent to gpt-3.5-turbo at
temperature 0.7 as in the paper. The reply must contain a Python / JSON list of n non-empty
strings; it is parsed with ast.literal_eval (never eval). Malformed or wrong-length replies and
HTTP errors are retried a bounded number of times. Results are written to the output file
after every class (temp file + rename), so an interrupted run resumes without asking again for
the classes already done.

User templates may use the paper's placeholders {category} (the class name) and
{num_captions} (descriptors per class), or {class_name} and {n}.
"""
from __future__ import annotations

import ast
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .descriptors import KINDS, DescriptorError, parse_descriptor_object
from ..files import atomic_write_json


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str  # may use {category} / {class_name} and {num_captions} / {n}

    def user_message(self, class_name: str, n: int) -> str:
        return self.user.format(category=class_name, class_name=class_name, num_captions=n, n=n)


# The paper's prompts (Figures 9 and 10), exactly as the figures' adjacent string literals join:
# no separator stands between "{category}" and "Provide".
PROMPTS = {
    "spatio": Prompt(
        system=(
            "You are an intelligent chatbot designed for providing meaningful class-label "
            "augmentations for classification tasks. Your task is to give corresponding meaningful "
            "and distinguishable text descriptions. Here's how you can accomplish the "
            "task:-----##INSTRUCTIONS: - Focus on the static visual cues that may benefit visual-side "
            "classification.\n- Give the key descriptors that can be found within a single image.\n- "
            "Try to focus on object-level cues, such as obvious objects or scenes that may include in "
            "the image.\n- Do not include descriptor that only contains 'person'"
        ),
        user=(
            "Please give me a long list of descriptors for action: {category}Provide your answer only "
            "as the description it self, {num_captions} descriptors in total.Please generate the "
            "response in the form of a Python list string that consists of the descriptors you "
            "provide.DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python "
            "list string. For example, your response should look like this: [\"descriptor1\", "
            "\"descriptor2\" ... ]."
        ),
    ),
    "temporal": Prompt(
        system=(
            "You are an intelligent chatbot designed for providing meaningful class-label "
            "augmentations for classification tasks. Your task is to give corresponding meaningful "
            "and distinguishable text descriptions. Here's how you can accomplish the "
            "task:-----##INSTRUCTIONS: - You can try to include as much verb as possible.\n- Do not "
            "include descriptor that only contains 'person'"
        ),
        user=(
            "Please give me a long list of decompositions of steps for action: {category}Provide your "
            "answer only as the steps it self, {num_captions} steps in total.Please generate the "
            "response in the form of a Python list string that consists of the steps you provide.DO "
            "NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python list string. "
            "For example, your response should look like this: [\"step1\", \"step2\" ... ]."
        ),
    ),
}
MODEL = "gpt-3.5-turbo"
TEMPERATURE = 0.7


class MalformedReply(ValueError):
    """The LLM's reply holds no list of exactly n non-empty strings."""


class GenerationError(RuntimeError):
    """A class got no valid reply within the allowed attempts."""


def parse_reply(text: str | None, n: int) -> list[str]:
    """The list of n descriptor strings inside an LLM reply (code fences and prose around it allowed)."""
    if not text:
        raise MalformedReply("empty reply")
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        raise MalformedReply(f"no list in reply: {text[:80]!r}")
    chunk = text[start : end + 1]
    try:
        value = ast.literal_eval(chunk)
    except (ValueError, SyntaxError):
        try:
            value = json.loads(chunk)
        except json.JSONDecodeError:
            raise MalformedReply(f"reply is not a Python or JSON list: {chunk[:80]!r}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise MalformedReply(f"reply is not a list of non-empty strings: {chunk[:80]!r}")
    if len(value) != n:
        raise MalformedReply(f"reply has {len(value)} descriptors, expected {n}")
    return [v.strip() for v in value]


def make_client(base_url: str | None = None, api_key: str | None = None, timeout: float = 60.0):
    """An openai.OpenAI client for any compatible endpoint; retries are ours, so its own are off."""
    import openai

    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key:
        raise GenerationError("no API key: pass --api-key or set OPENAI_API_KEY")
    return openai.OpenAI(base_url=base_url or os.environ.get("OPENAI_BASE_URL"), api_key=key,
                         max_retries=0, timeout=timeout)


def _load_partial(path: Path, num_classes: int) -> dict[str, list[str]]:
    """Classes already done in an earlier (interrupted) run of the same output file."""
    if not path.exists():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DescriptorError(f"{path}: exists but is not valid JSON ({exc}); move it away to start afresh") from None
    done = {k: v for k, v in obj.items()} if isinstance(obj, dict) else None
    if done is None:
        raise DescriptorError(f"{path}: exists but is not a descriptor object; move it away to start afresh")
    # Validate what is there as a complete set over its own ids, then check they are ours.
    ids = sorted(int(k) for k in done if k.isdigit())
    if any(i >= num_classes for i in ids):
        raise DescriptorError(f"{path}: holds class ids up to {max(ids)} but there are {num_classes} classes")
    for k, v in done.items():
        parse_descriptor_object({"0": v}, 1, f"{path} (class {k})")
    return done


def generate_descriptors(class_names: list[str], kind: str, n: int, out_path, *, client=None,
                         model: str = MODEL, temperature: float = TEMPERATURE, max_attempts: int = 4,
                         prompt: Prompt | None = None, retry_wait: float = 1.0,
                         progress: bool = True) -> list[list[str]]:
    """Generate (or finish generating) `kind` descriptors for every class; returns them per class
    and leaves them in out_path in the paper's JSON format."""
    import openai

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    # NaN or infinity cannot even be sent (JSON has neither); a negative one no endpoint takes.
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
            not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    prompt = prompt or PROMPTS[kind]
    out_path = Path(out_path)
    done = _load_partial(out_path, len(class_names))
    todo = [i for i in range(len(class_names)) if str(i) not in done]
    client = client or make_client()
    for i in tqdm(todo, desc=f"{kind} descriptors", disable=not progress, initial=len(class_names) - len(todo),
                  total=len(class_names)):
        messages = [{"role": "system", "content": prompt.system},
                    {"role": "user", "content": prompt.user_message(class_names[i], n)}]
        last_error = None
        for attempt in range(max_attempts):
            try:
                reply = client.chat.completions.create(model=model, messages=messages, temperature=temperature)
                done[str(i)] = parse_reply(reply.choices[0].message.content, n)
                break
            except MalformedReply as exc:
                last_error = exc
            except (openai.APIStatusError, openai.APIConnectionError, openai.APITimeoutError) as exc:
                last_error = exc
                if attempt + 1 < max_attempts:
                    time.sleep(min(30.0, retry_wait * 2**attempt))
        else:
            raise GenerationError(f"class {i} ({class_names[i]!r}): no valid reply after {max_attempts} attempts; "
                                  f"last: {last_error}")
        atomic_write_json(out_path, dict(sorted(done.items(), key=lambda kv: int(kv[0]))))
    return parse_descriptor_object(done, len(class_names), str(out_path))
