"""LLM judge against a scripted OpenAI-compatible server on 127.0.0.1: retries, failures, cache (keyed by what
decides a verdict), request body; redirects (the API key never leaves the configured server) and oversized replies
(read no further than the cap)."""

import json
import logging
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from datamodules.benchmarks import judge as judge_module
from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.judge import (
    MAX_REPLY_BYTES,
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    USER_PROMPT,
    Judge,
    aggregate,
    parse_verdict,
    read_cache,
)
from datamodules.benchmarks.msvd_qa import MSVDQA

GOOD = "{'pred': 'yes', 'score': 4}"


class FakeAPI(ThreadingHTTPServer):
    """Answers ``POST /v1/chat/completions`` (and a GET, which a followed redirect would send) with the next scripted
    reply (the last one repeats) and records each request's method, body and headers. A reply is a message text, an
    int HTTP status, ("sleep", seconds), ("redirect", status, location), ("raw", body bytes), ("stream", bytes:
    a body of that many bytes without a length, written in 64 KiB blocks until the client hangs up; ``sent``
    counts what went out, ``done`` is set when the handler ends) or ("declare", bytes: a Content-Length that big,
    then a short body)."""

    def __init__(self, replies):
        super().__init__(("127.0.0.1", 0), Handler)
        self.replies, self.requests = list(replies), []
        self.sent, self.done = 0, threading.Event()

    def handle_error(self, request, client_address):
        pass  # the timeout test's client hangs up before the reply; no traceback on stderr

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


BLOCK = b"x" * (1 << 16)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        server = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        server.requests.append({"method": self.command, "path": self.path, "body": body, "headers": dict(self.headers)})
        reply = server.replies.pop(0) if len(server.replies) > 1 else server.replies[0]
        if isinstance(reply, tuple) and reply[0] != "sleep":
            try:
                self.special(*reply)
            finally:
                server.done.set()
            return
        if isinstance(reply, tuple):
            time.sleep(reply[1])
            reply = GOOD
        if isinstance(reply, int):
            self.send_response(reply)
            self.end_headers()
            return
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST

    def special(self, kind, *args):
        if kind == "redirect":
            self.send_response(args[0])
            self.send_header("Location", args[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif kind == "raw":
            self.send_response(200)
            self.send_header("Content-Length", str(len(args[0])))
            self.end_headers()
            self.wfile.write(args[0])
        elif kind == "declare":
            self.send_response(200)
            self.send_header("Content-Length", str(args[0]))
            self.end_headers()
            self.wfile.write(BLOCK)
        elif kind == "stream":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()  # no length: the body ends when the server closes (HTTP/1.0)
            try:
                while self.server.sent < args[0]:
                    self.wfile.write(BLOCK)
                    self.server.sent += len(BLOCK)
            except OSError:  # the client hung up
                pass

    def log_message(self, *args):
        pass


def serve(server: FakeAPI) -> FakeAPI:
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    return server


@pytest.fixture
def api(request):
    server = serve(FakeAPI(request.param))
    yield server
    server.shutdown()
    server.server_close()


def make_judge(api, tmp_path, **kwargs):
    return Judge(url=api.url, model="judge-7b", cache=tmp_path / "judge.jsonl", backoff=0.0, timeout=2.0, **kwargs)


@pytest.mark.parametrize("api", [[GOOD]], indirect=True)
def test_good_reply_and_request(api, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test")
    judge = make_judge(api, tmp_path, api_key_env="MY_JUDGE_KEY")
    assert judge.judge("v1_0", "what is he holding?", "a cup", "He holds a mug.") == {"pred": "yes", "score": 4}
    assert (judge.asked, judge.cached, judge.failed) == (1, 0, 0)
    [req] = api.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["body"]["model"] == "judge-7b" and req["body"]["temperature"] == 0
    system, user = req["body"]["messages"]
    assert system["role"] == "system" and "synonyms" in system["content"]
    assert "Question: what is he holding?\nCorrect Answer: a cup\nPredicted Answer: He holds a mug." in user["content"]
    assert req["headers"]["Authorization"] == "Bearer sk-test"


@pytest.mark.parametrize("api", [[GOOD]], indirect=True)
def test_no_key_no_header(api, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    make_judge(api, tmp_path).judge("1", "q", "a", "p")
    assert "Authorization" not in api.requests[0]["headers"]


@pytest.mark.parametrize("api", [["I think it matches.", 500, GOOD]], indirect=True)
def test_retry_after_malformed_reply_and_http_error(api, tmp_path):
    judge = make_judge(api, tmp_path, max_retries=3)
    assert judge.judge("1", "q", "a", "p") == {"pred": "yes", "score": 4}
    assert len(api.requests) == 3 and (judge.asked, judge.failed) == (1, 0)


@pytest.mark.parametrize("api", [[500]], indirect=True)
def test_always_failing_gives_none(api, tmp_path):
    judge = make_judge(api, tmp_path, max_retries=3)
    assert judge.judge("1", "q", "a", "p") is None
    assert judge.judge("2", "q", "a", "p") is None
    assert len(api.requests) == 6 and (judge.asked, judge.cached, judge.failed) == (2, 0, 2)
    assert read_cache(tmp_path / "judge.jsonl") == {}  # failures are not cached: a later run asks again


@pytest.mark.parametrize("api", [[("sleep", 1.0)]], indirect=True)
def test_timeout_does_not_hang(api, tmp_path):
    judge = Judge(url=api.url, model="judge-7b", timeout=0.2, max_retries=2, backoff=0.0)
    start = time.monotonic()
    assert judge.judge("1", "q", "a", "p") is None
    assert time.monotonic() - start < 1.0 and judge.failed == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_the_key_stays_home(status, tmp_path, monkeypatch, caplog):
    """A 3xx to another origin (another port of 127.0.0.1) is a failed try: the other server gets no request, so
    neither the key nor the prompt reaches it, and its verdict is never taken."""
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-secret")
    elsewhere = serve(FakeAPI([GOOD]))
    api = serve(FakeAPI([("redirect", status, f"{elsewhere.url}/chat/completions")]))
    try:
        judge = make_judge(api, tmp_path, api_key_env="MY_JUDGE_KEY", max_retries=2)
        with caplog.at_level(logging.WARNING, "lit_bvllm.judge"):
            assert judge.judge("1", "q", "a", "p") is None
    finally:
        for server in (api, elsewhere):
            server.shutdown()
            server.server_close()
    assert [r["headers"]["Authorization"] for r in api.requests] == ["Bearer sk-secret"] * 2  # the key was set
    assert elsewhere.requests == []  # no Authorization header, no request at all
    assert (judge.asked, judge.failed) == (1, 1) and read_cache(tmp_path / "judge.jsonl") == {}
    assert f"{status} redirect to '{elsewhere.url}/chat/completions' not followed" in caplog.text


@pytest.mark.parametrize("api", [[("stream", 128 << 20)]], indirect=True)
def test_an_endless_reply_is_cut_off_at_the_cap(api, tmp_path, caplog):
    """A 128 MiB reply without a length: the judge reads MAX_REPLY_BYTES + 1 bytes, hangs up and counts a failure;
    the server could send no more than the socket buffers hold, and the client's memory stays near the cap."""
    judge = make_judge(api, tmp_path, max_retries=1)
    tracemalloc.start()
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, "lit_bvllm.judge"):
        verdict = judge.judge("1", "q", "a", "p")
    elapsed = time.monotonic() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert api.done.wait(10)
    assert api.sent < 32 << 20, api.sent  # about cap + the loopback socket buffers, not 128 MiB
    assert peak < 8 * MAX_REPLY_BYTES and elapsed < 5.0
    assert verdict is None and (judge.asked, judge.failed) == (1, 1)
    assert f"longer than the judge reads ({MAX_REPLY_BYTES} bytes)" in caplog.text


@pytest.mark.parametrize("api", [[("declare", 10 << 30)]], indirect=True)
def test_a_declared_oversized_reply_is_not_read(api, tmp_path, caplog):
    judge = make_judge(api, tmp_path, max_retries=1)
    with caplog.at_level(logging.WARNING, "lit_bvllm.judge"):
        assert judge.judge("1", "q", "a", "p") is None
    assert judge.failed == 1 and f"reply of {10 << 30} bytes is longer than the judge reads" in caplog.text


@pytest.mark.parametrize("api", [[("raw", b"[" * 500_000), GOOD]], indirect=True)
def test_a_deeply_nested_reply_is_a_failed_try(api, tmp_path):
    """Under the cap but nested past Python's recursion limit: that try fails, the next one is asked."""
    judge = make_judge(api, tmp_path, max_retries=2)
    assert judge.judge("1", "q", "a", "p") == {"pred": "yes", "score": 4}
    assert len(api.requests) == 2 and judge.failed == 0


@pytest.mark.parametrize("api", [[GOOD, "{'pred': 'no', 'score': 1}"]], indirect=True)
def test_cache_is_reused(api, tmp_path):
    first = make_judge(api, tmp_path)
    first.judge("1", "q", "a", "p")
    first.judge("2", "q", "a", "p2")
    second = make_judge(api, tmp_path)
    verdicts = [second.judge(i, "q", "a", p) for i, p in (("1", "p"), ("2", "p2"))]
    assert verdicts == [{"pred": "yes", "score": 4}, {"pred": "no", "score": 1}]
    assert len(api.requests) == 2 and (second.asked, second.cached) == (0, 2)
    [record, _] = [json.loads(line) for line in (tmp_path / "judge.jsonl").read_text().splitlines()]
    assert record["id"] == "1" and record["model"] == "judge-7b" and record["prompt"] == PROMPT_VERSION


@pytest.mark.parametrize("api", [["{'pred': 'yes', 'score': 5}", "{'pred': 'no', 'score': 0}"]], indirect=True)
def test_a_changed_prediction_is_judged_again_across_runs(api, tmp_path):
    """Two checkpoints evaluated into one run folder share its judge_cache.jsonl. The cache was keyed by item id, so
    the second checkpoint's "red" to a question whose answer is "blue" got the first one's "yes, 5"."""
    bench = MSVDQA(str(tmp_path), judge=Judge(url=api.url, model="judge-7b", backoff=0.0, timeout=2.0))
    items = [EvalItem(id="v1_0", video="v1.mp4", question="what colour is the ball?", options=[], answer="blue")]

    def run(prediction):
        records = [{"index": 0, "error": None, "prediction": prediction}]
        return bench.judged(records, items, tmp_path), records[0]["judge"]

    first, verdict = run("blue")
    assert verdict == {"pred": "yes", "score": 5} and first["judge_asked"] == 1
    second, verdict = run("red")
    assert verdict == {"pred": "no", "score": 0}, "another model's verdict was reused for a different answer"
    assert (second["judge_asked"], second["judge_cached"], second["judge_accuracy"]) == (1, 0, 0.0)
    third, verdict = run("blue")  # the same answer again: the cache answers
    assert verdict == {"pred": "yes", "score": 5} and (third["judge_asked"], third["judge_cached"]) == (0, 1)
    assert len(api.requests) == 2
    assert "Predicted Answer: red" in api.requests[1]["body"]["messages"][1]["content"]
    assert third["judge_model"] == "judge-7b" and third["judge_prompt"] == PROMPT_VERSION


@pytest.mark.parametrize("api", [["{'pred': 'no', 'score': 1}"]], indirect=True)
def test_another_judge_model_or_prompt_is_asked_again(api, tmp_path, monkeypatch):
    cache = tmp_path / "judge.jsonl"
    Judge(url=api.url, model="judge-7b", cache=cache).judge("1", "q", "a", "p")
    other = Judge(url=api.url, model="other-judge", cache=cache)
    assert other.judge("1", "q", "a", "p") == {"pred": "no", "score": 1} and other.asked == 1
    monkeypatch.setattr(judge_module, "PROMPT_VERSION", "reworded")
    reworded = Judge(url=api.url, model="judge-7b", cache=cache)
    assert reworded.judge("1", "q", "a", "p") == {"pred": "no", "score": 1} and reworded.asked == 1
    assert len(api.requests) == 3 and len(read_cache(cache)) == 3


def test_the_prompt_version_hashes_both_templates():
    import hashlib

    assert PROMPT_VERSION == hashlib.sha256(f"{SYSTEM_PROMPT}\0{USER_PROMPT}".encode()).hexdigest()[:12]


@pytest.mark.parametrize("api", [[GOOD]], indirect=True)
def test_old_format_cache_lines_are_ignored(api, tmp_path, caplog):
    """A line of the item-id format says nothing of the answer it judged: it is asked again, with a log line."""
    cache = tmp_path / "judge.jsonl"
    cache.write_text('{"id": "1", "pred": "no", "score": 0, "model": "judge-7b"}\n')
    with caplog.at_level(logging.WARNING, "lit_bvllm.judge"):
        judge = make_judge(api, tmp_path)
    assert "ignoring 1 verdict(s) of the old format" in caplog.text
    assert judge.judge("1", "q", "a", "p") == {"pred": "yes", "score": 4} and judge.asked == 1
    assert len(read_cache(cache)) == 1  # the new line; the old one stays in the file, unread


@pytest.mark.parametrize("api", [[GOOD]], indirect=True)
def test_truncated_last_cache_line(api, tmp_path):
    first = make_judge(api, tmp_path)
    first.judge("1", "q", "a", "p")
    cache = tmp_path / "judge.jsonl"
    cache.write_text(cache.read_text() + '{"key": "x", "id": "2", "pred": "ye')
    judge = make_judge(api, tmp_path)
    assert judge.judge("1", "q", "a", "p") == {"pred": "yes", "score": 4} and judge.cached == 1
    assert judge.judge("2", "q", "a", "p2") == {"pred": "yes", "score": 4}
    assert len(api.requests) == 2
    assert [json.loads(line)["id"] for line in cache.read_text().splitlines()] == ["1", "2"]


def test_broken_middle_cache_line_is_an_error(tmp_path):
    cache = tmp_path / "judge.jsonl"
    cache.write_text('{"id": "1", "pred\n{"id": "2", "pred": "no", "score": 2, "model": "m"}\n')
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        read_cache(cache)


@pytest.mark.parametrize("reply, expected", [
    ("{'pred': 'yes', 'score': 4}", {"pred": "yes", "score": 4}),
    ("```python\n{'pred': 'No', 'score': '2'}\n```", {"pred": "no", "score": 2}),
    ("Sure! {'pred': 'yes', 'score': 4.8}", {"pred": "yes", "score": 4}),
    ("{'pred': 'maybe', 'score': 3}", None),
    ("{'pred': 'yes', 'score': 7}", None),
    ("{'pred': 'yes'}", None),
    ("yes, 5", None),
    ("{'yes'}", None),
])
def test_parse_verdict(reply, expected):
    assert parse_verdict(reply) == expected


def test_aggregate_excludes_failures():
    verdicts = [{"pred": "yes", "score": 5}, {"pred": "no", "score": 1}, {"pred": "yes", "score": 3}, None]
    assert aggregate(verdicts) == {"judge_accuracy": 2 / 3, "judge_score": 3.0, "judged": 3, "judge_failures": 1}
    assert aggregate([None]) == {"judge_accuracy": None, "judge_score": None, "judged": 0, "judge_failures": 1}
