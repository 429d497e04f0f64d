"""Optional LLM judge for open-ended answers, through any OpenAI-compatible chat endpoint (a local vLLM or SGLang
server at ``http://localhost:8000/v1``, or a hosted API). Standard library only.

The protocol, though not the wording, is Video-ChatGPT's, used by VideoLLaMA2, B-VLLM, LLaMA-VID and lmms-eval
(Maaz et al., ACL 2024, ``quantitative_evaluation/evaluate_activitynet_qa.py``): a system message asking for a
meaningful match with synonyms and paraphrases counted as valid, a user message with the question, the correct
answer and the prediction, and a reply that is a Python dict string ``{'pred': 'yes'|'no', 'score': 0..5}`` read
with ``ast.literal_eval``. The prompt wording is NOT Video-ChatGPT's: it is this project's own, with the same
structure and the same demands, so verdicts can differ somewhat from those of the reference prompt. Results record
:data:`PROMPT_VERSION` (``judge_prompt``, a hash of both prompt templates) next to ``judge_model``; a published
number compares only with one judged by the same model and prompt.

The cache (``judge_cache.jsonl``) keys each verdict by everything that decides it: judge model, prompt version,
question, correct answer and prediction (:func:`cache_key`). Another checkpoint's different answer to the same item
is asked again; the same answer is reused. Lines of the older format, keyed by item id only, are ignored (logged).

Unlike the references (temperature 0.7 or 1.0, and retry loops that can spin forever), the judge runs at
temperature 0, asks each item at most ``max_retries`` times, and reports items it could not judge instead of
retrying without end or scoring them "no". Report the judge model and prompt next to the numbers.

The endpoint is trusted with the API key and nothing else: a redirect is never followed (urllib would re-send the
``Authorization`` header to wherever it points, another host included), and a reply longer than
:data:`MAX_REPLY_BYTES` is cut off unread; both make that try a failure.
"""

from __future__ import annotations

import ast
import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("lit_bvllm.judge")

SYSTEM_PROMPT = (
    "You are an intelligent assistant that evaluates the correctness of generated answers to questions about "
    "videos. Compare the predicted answer with the correct answer and decide whether they match in meaning.\n"
    "## INSTRUCTIONS:\n"
    "- Focus on whether the predicted answer and the correct answer match meaningfully, not word for word.\n"
    "- Count synonyms and paraphrases as valid matches.\n"
    "- Judge how correct the prediction is with respect to the correct answer."
)
USER_PROMPT = (
    "Please evaluate this video-based question-answer pair:\n\n"
    "Question: {question}\n"
    "Correct Answer: {reference}\n"
    "Predicted Answer: {prediction}\n\n"
    "Give your evaluation only as a yes/no verdict and a score, an integer from 0 to 5 where 5 is the highest "
    "meaningful match. Write it as a Python dictionary string with the keys 'pred' and 'score': the value of 'pred' "
    "is the string 'yes' or 'no', the value of 'score' is an INTEGER, not a STRING. Do not write any other text or "
    "explanation, only the Python dictionary string, for example: {{'pred': 'yes', 'score': 4}}."
)
PROMPT_VERSION = hashlib.sha256(f"{SYSTEM_PROMPT}\0{USER_PROMPT}".encode()).hexdigest()[:12]
"""Names the prompt: the first 12 hex digits of the SHA-256 of the system and user templates. Any change of wording
changes it, and with it every cache key."""
_DICT = re.compile(r"\{.*?\}", re.DOTALL)
MAX_REPLY_BYTES = 1 << 20
"""Longest judge reply read (1 MiB; a verdict's JSON is a few hundred bytes): a longer one is a failed try, and no
more than ``MAX_REPLY_BYTES + 1`` bytes of it are read."""


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Fails on every redirect instead of following it: urllib's follow copies the request's headers, the API key
    among them, to the new address, whatever its host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(
            req.full_url, code, f"{code} redirect to {newurl!r} not followed (it would carry the API key); "
            "give the final address as --data.benchmark.judge.url", headers, fp)


_OPENER = urllib.request.build_opener(_RefuseRedirects)


def read_capped(response, limit: int = MAX_REPLY_BYTES) -> bytes:
    """The body of ``response``, or a ValueError when it is longer than ``limit`` bytes (a declared
    ``Content-Length`` over the limit fails before reading; otherwise at most ``limit + 1`` bytes are read)."""
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise ValueError(f"reply of {int(declared)} bytes is longer than the judge reads ({limit} bytes)")
    data = response.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"reply is longer than the judge reads ({limit} bytes); stopped reading")
    return data


def parse_verdict(reply: str) -> dict | None:
    """``{"pred": "yes"|"no", "score": int}`` from the judge's reply, or None when it is not one.

    Accepts the dict anywhere in the reply (code fences, a sentence around it), "Yes"/" no " in any case, and a
    numeric score (a float or numeric string is truncated to int, as the references' ``int(score)``); a score
    outside 0..5 is rejected.
    """
    for candidate in _DICT.findall(reply):
        try:
            verdict = ast.literal_eval(candidate)
            pred, score = str(verdict["pred"]).strip().lower(), int(float(verdict["score"]))
        except (ValueError, SyntaxError, TypeError, KeyError, OverflowError, MemoryError, RecursionError):
            continue
        if pred in ("yes", "no") and 0 <= score <= 5:
            return {"pred": pred, "score": score}
    return None


def cache_key(model: str, prompt: str, question: str, reference: str, prediction: str) -> str:
    """The cache key of one verdict: SHA-256 over everything that decides it (judge model, prompt version, question,
    correct answer, prediction), so a verdict is reused only for the same judge asked the same thing."""
    return hashlib.sha256(json.dumps([model, prompt, question, reference, prediction]).encode()).hexdigest()


def read_cache(path: Path) -> dict[str, dict]:
    """The verdicts of a JSONL cache, by :func:`cache_key`. A truncated last line (a crash mid-write) is cut off the
    file so that later appends start on a fresh line; a broken line before it is an error. Lines without a ``key``
    (the older format, keyed by item id only, which reused one model's verdicts for another's answers) are ignored,
    with a log line: their items are asked again."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    verdicts, good, old = {}, 0, 0
    for k, line in enumerate(lines):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if k < len(lines) - 1:
                    raise ValueError(f"judge cache {path}: line {k + 1} is not JSON; fix or delete the file") from None
                log.warning("judge cache %s: dropping a truncated last line", path)
                with open(path, "r+b") as f:
                    f.truncate(good)
                break
            if "key" in record:
                verdicts[str(record["key"])] = record
            else:
                old += 1
        good += len(line) + 1
    if old:
        log.warning("judge cache %s: ignoring %d verdict(s) of the old format (keyed by item id only, not by model, "
                    "prompt and answer); those items are asked again", path, old)
    return verdicts


@dataclass
class Judge:
    """Judges open-ended answers through an OpenAI-compatible ``/chat/completions`` endpoint, caching each verdict.

    An open-ended benchmark's ``judge`` option: ``--data.benchmark.judge.url http://localhost:8000/v1
    --data.benchmark.judge.model NAME``, or ``judge: {url: ..., model: ...}`` in its ``init_args``.

    Counters: ``asked`` items sent to the endpoint, ``cached`` items answered from the cache, ``failed`` items
    with no verdict after ``max_retries`` tries (not cached, so a later run asks them again).
    """

    url: str
    """Base URL of the API, e.g. ``http://localhost:8000/v1``; requests go to ``{url}/chat/completions``."""
    model: str
    """Model name sent with each request (and recorded with each cached verdict)."""
    cache: str | Path | None = None
    """JSONL file of verdicts, appended as each item finishes, keyed by :func:`cache_key` (model, prompt, question,
    answer, prediction): the same question and answer are never asked twice, a changed prediction is."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key; unset or empty sends no Authorization header."""
    temperature: float = 0.0
    """Sampling temperature of the judge (the references use 0.7 or 1.0; lmms-eval uses 0)."""
    max_tokens: int = 64
    """Reply length limit; the dict needs about 15 tokens."""
    timeout: float = 60.0
    """Seconds to wait for one reply."""
    max_retries: int = 3
    """Tries per item (at least 1) before it counts as failed."""
    backoff: float = 1.0
    """Seconds before the second try, doubling for each later one."""
    asked: int = field(default=0, init=False)
    cached: int = field(default=0, init=False)
    failed: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.max_retries < 1:
            raise ValueError(f"max_retries={self.max_retries}: the judge must try each item at least once")
        self.cache = Path(self.cache) if self.cache is not None else None
        self._verdicts = read_cache(self.cache) if self.cache is not None else {}

    def judge(self, item_id: str, question: str, reference: str, prediction: str) -> dict | None:
        """``{"pred": "yes"|"no", "score": int}`` for one answer, from the cache (same model, prompt, question,
        answer and prediction: :func:`cache_key`) or the endpoint; None after ``max_retries`` failed tries (HTTP
        error, redirect, timeout, reply over :data:`MAX_REPLY_BYTES`, unparseable reply). ``item_id`` only names
        the item in the cache and the logs."""
        item_id = str(item_id)
        key = cache_key(self.model, PROMPT_VERSION, question, reference, prediction)
        if key in self._verdicts:
            self.cached += 1
            return {"pred": self._verdicts[key]["pred"], "score": self._verdicts[key]["score"]}
        self.asked += 1
        user = USER_PROMPT.format(question=question, reference=reference, prediction=prediction)
        for attempt in range(self.max_retries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                reply = self._chat(user)
            except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError, TypeError,
                    RecursionError) as err:  # RecursionError: deeply nested JSON
                log.warning("judge: item %s, try %d/%d: %s", item_id, attempt + 1, self.max_retries, err)
                continue
            if verdict := parse_verdict(reply):
                self._remember(key, item_id, verdict)
                return verdict
            log.warning("judge: item %s, try %d/%d: unparseable reply %r", item_id, attempt + 1, self.max_retries,
                        reply[:200])
        self.failed += 1
        return None

    def _chat(self, user: str) -> str:
        """One chat completion; the reply's text. Redirects are refused and the reply is read up to
        :data:`MAX_REPLY_BYTES` (module docstring)."""
        body = {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]}
        headers = {"Content-Type": "application/json"}
        if key := os.environ.get(self.api_key_env or "", ""):
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(f"{self.url.rstrip('/')}/chat/completions",
                                         data=json.dumps(body).encode(), headers=headers, method="POST")
        with _OPENER.open(request, timeout=self.timeout) as response:
            content = json.loads(read_capped(response))["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise TypeError(f"reply without text content: {content!r}")
        return content

    def _remember(self, key: str, item_id: str, verdict: dict) -> None:
        self._verdicts[key] = record = {"key": key, "id": item_id, **verdict, "model": self.model,
                                        "prompt": PROMPT_VERSION}
        if self.cache is not None:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            with open(self.cache, "a") as f:  # closed, hence flushed, before the next item
                f.write(json.dumps(record) + "\n")


def aggregate(verdicts: list[dict | None]) -> dict:
    """Judge accuracy and score over the judged items.

    ``judge_accuracy`` = yes / (yes + no), ``judge_score`` = mean score, as the references compute them; items
    the judge failed on (None) are excluded from both and counted in ``judge_failures`` (lmms-eval scores them as
    "no"/0 instead, the other references retry forever). Both are None when nothing was judged.
    """
    judged = [v for v in verdicts if v is not None]
    yes = sum(v["pred"] == "yes" for v in judged)
    return {
        "judge_accuracy": yes / len(judged) if judged else None,
        "judge_score": sum(v["score"] for v in judged) / len(judged) if judged else None,
        "judged": len(judged),
        "judge_failures": len(verdicts) - len(judged),
    }
