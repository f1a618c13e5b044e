from collections import Counter

import pytest

from selalign.settings.world import decisive_token_mask


def marked_runs(mask):
    """[start, end) index ranges of consecutive True flags."""
    runs, start = [], None
    for i, flag in enumerate([*mask, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i))
            start = None
    return runs


def test_mask_covers_exactly_the_stated_values_of_value_pairs(world, world_tokenizer):
    marked_counts = Counter()
    for pair in world.preference_pairs("train", 900):
        if pair["rule"] != "value":
            continue
        for side in ("chosen", "rejected"):
            response, [[start, end]] = pair[side], pair[f"{side}_decisive"]
            ids = world_tokenizer(response, add_special_tokens=False)["input_ids"]
            mask = decisive_token_mask(world_tokenizer, response, pair[f"{side}_decisive"])
            assert len(mask) == len(ids)
            [(first, last)] = marked_runs(mask)
            assert world_tokenizer.decode(ids[first:last]).strip() == response[start:end]
            assert world_tokenizer.decode(ids[:first]) + world_tokenizer.decode(ids[first:last]) + world_tokenizer.decode(ids[last:]) == response
            marked_counts[last - first] += 1
    assert marked_counts[1] > 0 and marked_counts[2] > 0 and sum(n for k, n in marked_counts.items() if k >= 3) > 0


def test_format_rule_pairs_mark_the_rule_tokens_where_the_responses_part(world, world_tokenizer):
    seen = Counter()
    for pair in world.preference_pairs("train", 600):
        if pair["rule"] == "value":
            continue
        marked = {}
        for side in ("chosen", "rejected"):
            ids = world_tokenizer(pair[side], add_special_tokens=False)["input_ids"]
            mask = decisive_token_mask(world_tokenizer, pair[side], pair[f"{side}_decisive"])
            [(first, last)] = marked_runs(mask)
            marked[side] = (ids[:first], world_tokenizer.decode(ids[first:last]))
        if pair["rule"] == "final_mark":
            assert marked["chosen"][1] in (".", "!", "?") and marked["rejected"][1] == ","
        else:
            word = marked["rejected"][1].split()[0]
            assert marked["rejected"][1] == f" {word} {word}"
            # the chosen response's marked token is the one it says where the rejected one repeats the word
            assert world_tokenizer.decode(marked["chosen"][0]).endswith(word) and not marked["chosen"][1].strip().startswith(word)
        assert marked["chosen"][0] == marked["rejected"][0]  # both responses are the same up to the marked tokens
        seen[pair["rule"]] += 1
    assert seen["final_mark"] > 50 and seen["repeated_word"] > 50


def test_mask_lines_up_after_the_prompt_in_a_concatenated_row(world, world_tokenizer):
    pair = world.preference_pairs("test", 1)[0]
    prompt_ids = world_tokenizer(pair["prompt"])["input_ids"]
    response_ids = world_tokenizer(pair["chosen"], add_special_tokens=False)["input_ids"]
    row = prompt_ids + response_ids
    mask = [False] * len(prompt_ids) + decisive_token_mask(world_tokenizer, pair["chosen"], pair["chosen_decisive"])
    [[start, end]] = pair["chosen_decisive"]
    assert world_tokenizer.decode([t for t, keep in zip(row, mask) if keep]).strip() == pair["chosen"][start:end]


def test_leading_space_token_is_marked_and_the_token_before_is_not(world_tokenizer):
    response = "Sure! It is dark green. Hope this helps."
    start = response.index("dark green")
    tokens = world_tokenizer.convert_ids_to_tokens(world_tokenizer(response, add_special_tokens=False)["input_ids"])
    mask = decisive_token_mask(world_tokenizer, response, [[start, start + len("dark green")]])
    assert [t for t, keep in zip(tokens, mask) if keep] == ["Ġdark", "Ġgreen"]
    assert tokens[mask.index(True) - 1] == "Ġis"
    assert tokens[mask.index(True) + 2] == "."


def test_several_spans_are_all_marked(world_tokenizer):
    response = "It is red, not blue."
    spans = [[6, 9], [15, 19]]
    ids = world_tokenizer(response, add_special_tokens=False)["input_ids"]
    mask = decisive_token_mask(world_tokenizer, response, spans)
    assert [world_tokenizer.decode(ids[a:b]).strip() for a, b in marked_runs(mask)] == ["red", "blue"]


def test_span_outside_the_response_is_refused(world_tokenizer):
    with pytest.raises(ValueError, match="does not lie inside"):
        decisive_token_mask(world_tokenizer, "It is red.", [[6, 40]])
    with pytest.raises(ValueError, match="does not lie inside"):
        decisive_token_mask(world_tokenizer, "It is red.", [[6, 6]])
