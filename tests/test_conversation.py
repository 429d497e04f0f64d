"""Conversations to tokens: both schemas, label masking by decoded spans, plain format, truncation, tag errors."""

import copy

import pytest

from datamodules.conversation import IGNORE_INDEX, parse_entry, tokenize
from datamodules.errors import SampleError

VIDEO = {
    "id": "v1",
    "video": "videos/a.mp4",
    "conversations": [
        {"from": "human", "value": "What shape appears?\n<video>"},
        {"from": "gpt", "value": "A red star."},
        {"from": "human", "value": "When?"},
        {"from": "gpt", "value": "At about second 12."},
    ],
}


def spans(tokenizer, labels):
    """Decoded supervised spans (maximal runs of labels != -100)."""
    out, cur = [], []
    for lab in labels + [IGNORE_INDEX]:
        if lab != IGNORE_INDEX:
            cur.append(lab)
        elif cur:
            out.append(tokenizer.decode(cur))
            cur = []
    return out


def test_labels_cover_exactly_the_gpt_turns(tokenizer):
    conv = parse_entry(VIDEO, "<video>")
    ids, labels, truncated = tokenize(tokenizer, conv, "chat", "<video>", 512, 32)
    assert not truncated and len(ids) == len(labels)
    assert spans(tokenizer, labels) == ["A red star.<|im_end|>\n", "At about second 12.<|im_end|>\n"]
    assert ids.count(tokenizer.convert_tokens_to_ids("<video>")) == 1
    text = tokenizer.decode(ids)
    assert "<|im_start|>user\n<video>\nWhat shape appears?<|im_end|>" in text  # tag moved to the head of its turn
    assert conv.question == "What shape appears?"


def test_llamavid_schema_gives_the_same_tokens(tokenizer):
    llamavid = copy.deepcopy(VIDEO)
    llamavid["conversations"][0]["value"] = "<image>\nWhat shape appears?"
    a = tokenize(tokenizer, parse_entry(VIDEO, "<video>"), "chat", "<video>", 512, 32)
    b = tokenize(tokenizer, parse_entry(llamavid, "<video>"), "chat", "<video>", 512, 32)
    assert a == b


def test_role_content_turns_and_system_prompt(tokenizer):
    entry = {"id": 1, "conversations": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]}
    conv = parse_entry(entry, "<video>")
    ids, labels, _ = tokenize(tokenizer, conv, "chat", "<video>", 512, 32)
    assert tokenizer.decode(ids).startswith("<|im_start|>system\nBe terse.<|im_end|>")
    assert spans(tokenizer, labels) == ["4<|im_end|>\n"]
    assert conv.media is None


def test_plain_pretrain_format(tokenizer):
    conv = parse_entry(VIDEO, "<video>")
    ids, labels, _ = tokenize(tokenizer, conv, "plain", "<video>", 512, 32)
    assert tokenizer.decode(ids) == "<video>\nA red star.<|im_end|>"
    assert spans(tokenizer, labels) == ["A red star.<|im_end|>"]


def test_truncation_drops_whole_trailing_pairs_and_respects_the_visual_budget(tokenizer):
    conv = parse_entry(VIDEO, "<video>")
    full, _, _ = tokenize(tokenizer, conv, "chat", "<video>", 10_000, 32)
    # a budget that fits the first pair but not the second
    first_pair_end = len(tokenize(tokenizer,
                                  parse_entry({**VIDEO, "conversations": VIDEO["conversations"][:2]}, "<video>"),
                                  "chat", "<video>", 10_000, 32)[0])
    max_length = first_pair_end + 5 + 31
    ids, labels, truncated = tokenize(tokenizer, conv, "chat", "<video>", max_length, 32)
    assert truncated and len(ids) == first_pair_end < len(full)
    assert len(ids) - 1 + 32 <= max_length  # spliced length fits
    assert spans(tokenizer, labels) == ["A red star.<|im_end|>\n"]
    # tighter: the first answer itself is cut
    ids, labels, truncated = tokenize(tokenizer, conv, "chat", "<video>", first_pair_end - 3 + 31, 32)
    assert truncated and len(ids) - 1 + 32 == first_pair_end - 3 + 31
    assert labels[-1] != IGNORE_INDEX
    # the prompt alone does not fit
    with pytest.raises(SampleError) as err:
        tokenize(tokenizer, conv, "chat", "<video>", 40, 32)
    assert err.value.reason == "too_long" and "--data.max_length" in str(err.value)


def test_text_only_gets_the_whole_length(tokenizer):
    entry = {"id": 2, "conversations": [{"from": "human", "value": "Count to three."},
                                        {"from": "gpt", "value": "one two three"}]}
    ids, _, truncated = tokenize(tokenizer, parse_entry(entry, "<video>"), "chat", "<video>", len(
        tokenize(tokenizer, parse_entry(entry, "<video>"), "chat", "<video>", 1000, 32)[0]), 32)
    assert not truncated  # no visual budget reserved without media


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda e: e["conversations"][0].update(value="What shape appears?"), "missing_tag"),
        (lambda e: e["conversations"][2].update(value="<video> When?"), "extra_tag"),
        (lambda e: e["conversations"][0].update(value="<video><video> x"), "extra_tag"),
        (lambda e: e.pop("video"), "extra_tag"),
        (lambda e: e.update(image="x.jpg"), "bad_entry"),
        (lambda e: e.update(video=""), "bad_entry"),
        (lambda e: e.pop("conversations"), "bad_conversation"),
        (lambda e: e["conversations"].pop(), "bad_conversation"),
        (lambda e: e["conversations"][1].update({"from": "human"}), "bad_conversation"),
        (lambda e: e["conversations"][3].update(value="  "), "bad_conversation"),
        (lambda e: e["conversations"].__setitem__(1, "oops"), "bad_conversation"),
    ],
)
def test_malformed_entries_name_the_reason_and_field(change, reason):
    entry = copy.deepcopy(VIDEO)
    change(entry)
    with pytest.raises(SampleError) as err:
        parse_entry(entry, "<video>")
    assert err.value.reason == reason and err.value.field


@pytest.mark.parametrize("turn", [0, 1, 3])
def test_a_lone_surrogate_is_bad_text_before_the_tokenizer_sees_it(tokenizer, turn):
    """JSON can hold "\\udcff"; the tokenizer raises a bare TypeError on it (issue 10, point 5)."""
    import json

    entry = json.loads(json.dumps(VIDEO).replace("A red star.", "A red \\udcff star.")
                       .replace("At about", "At \\udcff"))
    entry["conversations"][turn]["value"] += "\udcff"
    with pytest.raises(TypeError):  # what the tokenizer alone does with it
        tokenizer(entry["conversations"][turn]["value"])
    with pytest.raises(SampleError) as err:
        parse_entry(entry, "<video>")
    assert err.value.reason == "bad_text" and err.value.field == f"conversations[{min(turn, 1)}]"
    assert "'\\udcff'" in err.value.detail
