"""LLM judge against a scripted OpenAI-compatible server on 127.0.0.1: retries, failures, cache, request body."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from datamodules.benchmarks.judge import Judge, aggregate, parse_verdict, read_cache

GOOD = "{'pred': 'yes', 'score': 4}"


class FakeAPI(ThreadingHTTPServer):
    """Answers ``POST /v1/chat/completions`` with the next scripted reply (the last one repeats) and records each
    request's body and headers. A reply is a message text, an int HTTP status, or ("sleep", seconds)."""

    def __init__(self, replies):
        super().__init__(("127.0.0.1", 0), Handler)
        self.replies, self.requests = list(replies), []

    def handle_error(self, request, client_address):
        pass  # the timeout test's client hangs up before the reply; no traceback on stderr

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        reply = server.replies.pop(0) if len(server.replies) > 1 else server.replies[0]
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

    def log_message(self, *args):
        pass


@pytest.fixture
def api(request):
    server = FakeAPI(request.param)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
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


@pytest.mark.parametrize("api", [[GOOD, "{'pred': 'no', 'score': 1}"]], indirect=True)
def test_cache_is_reused(api, tmp_path):
    first = make_judge(api, tmp_path)
    first.judge("1", "q", "a", "p")
    first.judge("2", "q", "a", "p")
    second = make_judge(api, tmp_path)
    verdicts = [second.judge(i, "q", "a", "p") for i in ("1", "2")]
    assert verdicts == [{"pred": "yes", "score": 4}, {"pred": "no", "score": 1}]
    assert len(api.requests) == 2 and (second.asked, second.cached) == (0, 2)
    with pytest.raises(ValueError, match="another cache file for another judge model"):
        Judge(url=api.url, model="other-judge", cache=tmp_path / "judge.jsonl")


@pytest.mark.parametrize("api", [[GOOD]], indirect=True)
def test_truncated_last_cache_line(api, tmp_path):
    cache = tmp_path / "judge.jsonl"
    cache.write_text('{"id": "1", "pred": "no", "score": 2, "model": "judge-7b"}\n{"id": "2", "pred": "ye')
    judge = make_judge(api, tmp_path)
    assert judge.judge("1", "q", "a", "p") == {"pred": "no", "score": 2}
    assert judge.judge("2", "q", "a", "p") == {"pred": "yes", "score": 4}
    assert len(api.requests) == 1
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
