"""English captions and question-answer pairs derived from scene records (see scenes.py) only."""

import numpy as np

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def article(phrase: str) -> str:
    """`phrase` with "a" or "an" in front."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def needle_name(needle: dict) -> str:
    """"red triangle"."""
    return f"{needle['colour']} {needle['shape']}"


def distinct_needles(record: dict) -> list[dict]:
    """The record's needles, first occurrence of each (shape, colour) only, in time order."""
    seen, out = set(), []
    for n in record["needles"]:
        if needle_name(n) not in seen:
            seen.add(needle_name(n))
            out.append(n)
    return out


def count_of(record: dict, name: str) -> int:
    """How many needle events show the needle called `name` ("red triangle")."""
    return sum(needle_name(n) == name for n in record["needles"])


def background_phrase(bg: dict) -> str:
    """"a navy background" or "a background fading from navy at the top to olive at the bottom"."""
    if bg["direction"] == "solid":
        return f"{article(bg['colours'][0])} background"
    ends = ("the top", "the bottom") if bg["direction"] == "vertical" else ("the left", "the right")
    return f"a background fading from {bg['colours'][0]} at {ends[0]} to {bg['colours'][1]} at {ends[1]}"


def distractor_phrase(d: dict, moving: bool) -> str:
    """"an orange circle bounces horizontally" (or just "an orange circle" for still images)."""
    name = article(f"{d['colour']} {d['shape']}")
    return f"{name} bounces {d['motion']}" if moving else name


def join(items: list[str]) -> str:
    """"x", "x and y", "x, y and z"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def caption(record: dict) -> str:
    """A short description: background, distractors (and their motion), needles in time order with times."""
    moving = record["kind"] == "video"
    text = f"{'A video' if moving else 'An image'} with {background_phrase(record['background'])}. "
    clause = ("" if moving else "it shows ") + join([distractor_phrase(d, moving) for d in record["distractors"]])
    text += _upper_first(clause) + "."
    needles = record["needles"]
    if not needles:
        return text + " Nothing else appears."
    if not moving:
        return text + f" There is also {article(needle_name(needles[0]))}."
    events = [f"{article(needle_name(n))} at about {n['start']} s" for n in needles]
    return text + " Briefly shown: " + ", then ".join(events) + "."


def video_qa(record: dict, rng: np.random.Generator) -> list[tuple[str, str]]:
    """All question-answer pairs the record supports; the question wording is drawn from `rng`."""
    bg, ds, needles = record["background"], record["distractors"], record["needles"]
    pairs = [(_pick(rng, ("What color is the background?", "Describe the background of the video.")),
              f"The video has {background_phrase(bg)}.")]
    pairs.append((_pick(rng, ("How many circles and squares move around in the video?",
                              "How many moving circles and squares are there?")),
                  f"{NUMBER_WORDS[len(ds)].capitalize()}: {join([distractor_phrase(d, False) for d in ds])}."))
    d = ds[int(rng.integers(len(ds)))]  # distractors differ in (shape, colour), so the name is unambiguous
    pairs.append((f"How does the {d['colour']} {d['shape']} move?", f"It bounces {d['motion']}."))
    if not needles:
        pairs.append(("Does any other shape briefly appear in the video?",
                      "No. Only the moving circles and squares are shown."))
        return pairs
    distinct = distinct_needles(record)
    pairs.append(("Does any other shape briefly appear in the video?",
                  f"Yes: {join([article(needle_name(n)) for n in distinct])}."))
    pairs.append(("How many times does a shape briefly flash up in the video?",
                  f"{NUMBER_WORDS[len(needles)].capitalize()} time{'s' if len(needles) > 1 else ''}."))
    pairs.append(("Which shape appears first?",
                  f"{_upper_first(article(needle_name(needles[0])))}, at about second {needles[0]['start']}."))
    n = distinct[int(rng.integers(len(distinct)))]
    pairs.append((f"What color is the {n['shape']} that briefly appears?", f"It is {n['colour']}."))
    count = count_of(record, needle_name(n))
    pairs.append((f"At about what second does the {needle_name(n)} appear?",
                  f"At about second {n['start']}"
                  + (f", and {NUMBER_WORDS[count]} times in total." if count > 1 else ".")))
    pairs.append((f"How many times does the {needle_name(n)} appear?", f"{NUMBER_WORDS[count].capitalize()}."))
    pairs += needle_set_qa(record, rng, n)[1:]  # the needle set's own forms (retrieval, counting, ordering)
    if len(distinct) > 1:
        a, b = (distinct[i] for i in rng.choice(len(distinct), size=2, replace=False))
        first = a if a["start"] < b["start"] else b
        pairs.append((f"Which appears first, the {a['shape']} or the {b['shape']}?", f"The {first['shape']}."))
    return pairs


def needle_set_qa(record: dict, rng: np.random.Generator, needle: dict | None = None) -> list[tuple[str, str]]:
    """The held-out needle set's question forms (``evalsets.vnbench_questions`` and its every-frame type), answered
    as their right options read: the background ("The video has a navy background."), then, when the video has
    needles, retrieval ("a red triangle"), counting ("2") and ordering ("red triangle, then blue star"), about
    ``needle`` (drawn from the video's distinct needles when None)."""
    pairs = [("What color is the background?", f"The video has {background_phrase(record['background'])}.")]
    needles = record["needles"]
    if not needles:
        return pairs
    distinct = distinct_needles(record)
    n = needle if needle is not None else distinct[int(rng.integers(len(distinct)))]
    return pairs + [
        ("Which of these shapes briefly appears in the video?", article(needle_name(n))),
        (f"How many times does {article(needle_name(n))} appear?", str(count_of(record, needle_name(n)))),
        ("In which order do the briefly shown shapes appear?", ", then ".join(needle_name(x) for x in needles)),
    ]


def image_qa(record: dict, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Question-answer pairs about a still-image record."""
    ds, needles = record["distractors"], record["needles"]
    pairs = [(_pick(rng, ("What color is the background?", "Describe the background of the image.")),
              f"The image has {background_phrase(record['background'])}."),
             ("How many circles and squares are in the image?",
              f"{NUMBER_WORDS[len(ds)].capitalize()}: {join([distractor_phrase(d, False) for d in ds])}.")]
    if needles:
        pairs.append(("Is there a triangle, star, cross, diamond or ring in the image?",
                      f"Yes, {article(needle_name(needles[0]))}."))
        pairs.append((f"What color is the {needles[0]['shape']}?", f"It is {needles[0]['colour']}."))
    else:
        pairs.append(("Is there a triangle, star, cross, diamond or ring in the image?", "No."))
    return pairs


def text_qa(rng: np.random.Generator) -> tuple[str, str]:
    """A text-only question with a computed answer: arithmetic or letter counting."""
    if rng.random() < 0.6:
        a, b = (int(x) for x in rng.integers(2, 30, size=2))
        op = _pick(rng, ("plus", "minus", "times"))
        value = a + b if op == "plus" else a - b if op == "minus" else a * b
        return f"What is {a} {op} {b}?", str(value)
    word = _pick(rng, ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "purple", "beige"))
    return f"How many letters are in the word '{word}'?", str(len(word))


def _pick(rng: np.random.Generator, options: tuple) -> str:
    """One element of `options`, drawn uniformly."""
    return options[int(rng.integers(len(options)))]


def _upper_first(text: str) -> str:
    """`text` with its first letter in upper case (the rest untouched)."""
    return text[:1].upper() + text[1:]
