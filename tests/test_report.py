"""python -m lit_bvllm.analysis.report: results side by side, chance only where chance means something."""

from lit_bvllm.analysis.report import table


def test_table_puts_runs_side_by_side_with_selection_rows():
    model = {"circular_per_category": {"ret": 0.75}, "circular_accuracy": 0.5, "chance": 0.25, "items": 8,
             "selection": {"hit_rate": 0.9, "uniform_hit_rate": 0.2, "event_recall": 0.8, "uniform_event_recall": 0.1,
                           "frames_kept": 6.5, "per_category": {"ret": {"hit_rate": 1.0, "uniform_hit_rate": 0.25}}}}
    blind = {"circular_per_category": {"ret": 0.25}, "circular_accuracy": 0.25, "chance": 0.25, "items": 8}
    lines = table({"model": model, "blind": blind}).splitlines()
    assert lines[0] == "| metric | model | blind | chance |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert rows["circular/ret"] == "| circular/ret | 0.750 | 0.250 | 0.250 |"
    assert rows["circular_accuracy"] == "| circular_accuracy | 0.500 | 0.250 | 0.250 |"
    assert rows["selection/hit_rate"] == "| selection/hit_rate | 0.900 |  |  |"  # no chance column for selection
    assert rows["selection/ret/uniform_hit_rate"] == "| selection/ret/uniform_hit_rate | 0.250 |  |  |"
    assert rows["selection/frames_kept"] == "| selection/frames_kept | 6.500 |  |  |"
    assert rows["items"] == "| items | 8 | 8 | |"


def test_an_official_scorers_numbers_come_first():
    videomme = {"official": {"accuracy": 0.6, "answered": 5, "per_duration": {"short": 0.5}}, "accuracy": 0.5,
                "per_duration": {"short": 0.4}, "chance": 0.25, "items": 6, "unreadable_videos": 1}
    lines = table({"model": videomme}).splitlines()
    names = [line.split(" | ")[0].lstrip("| ") for line in lines[2:]]
    assert names[:2] == ["official/accuracy", "official/duration/short"]  # the count `answered` is no score row
    assert names.index("official/accuracy") < names.index("accuracy")
    assert "| unreadable_videos | 1 | |" in lines
