"""The VLM's generation metrics against published or hand-computed values, and the WordNet bridge METEOR needs."""

from __future__ import annotations

import pytest

from spottrain.tasks.vlm.metrics import generation_metrics
from spottrain.tasks.vlm.wordnet import (DEBIAN_FILES, DEBIAN_WORDNET, INSTALL, WordNetMissing, build,
                                         ensure_wordnet, wordnet_ready)

# sacrebleu's README ("Using SacreBLEU from Python"): three hypotheses, two reference streams.
README_HYPOTHESES = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
README_REFERENCES = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
                     ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]


def test_bleu4_is_sacrebleus_corpus_bleu_with_its_default_tokenisation():
    import sacrebleu

    # The README's published figure, BLEU = 48.53: the defaults bleu4 relies on (13a, case-sensitive) hold.
    assert round(sacrebleu.corpus_bleu(README_HYPOTHESES, README_REFERENCES).score, 2) == 48.53
    # One reference per prediction (the first stream), by hand. 13a splits the final "." off and keeps "wasn't":
    #   hypotheses  The dog bit the man . (6) | It wasn't surprising . (4) | The man had just bitten him . (7)
    #   references  The dog bit the man . (6) | It was not unexpected . (5) | The man bit him first . (6)
    # 17 hypothesis and 17 reference tokens: brevity penalty 1. Clipped matches / hypothesis n-grams:
    #   1-grams 6 + 2 (It .) + 4 (The man him .) = 12/17;  2-grams 5 + 0 + 1 (The man) = 6/14
    #   3-grams 4 + 0 + 0 = 4/11;                            4-grams 3 + 0 + 0 = 3/8
    by_hand = 100 * (12 / 17 * 6 / 14 * 4 / 11 * 3 / 8) ** 0.25  # 45.07
    bleu4 = generation_metrics(README_HYPOTHESES, README_REFERENCES[0])["bleu4"]
    assert bleu4 == pytest.approx(by_hand, abs=1e-9)
    assert round(bleu4, 2) == 45.07


@pytest.mark.parametrize("prediction, reference, expected", [
    # LCS "police the gunman" = 3 of 4 tokens each side: P = R = 3/4, F = 3/4.
    ("police kill the gunman", "police killed the gunman", 3 / 4),
    # LCS "the brown fox jumps" = 4; P = 4/6 (prediction), R = 4/5 (reference); F = 2PR/(P+R) = 8/11.
    ("the brown fox quickly jumps over", "the quick brown fox jumps", 8 / 11),
])
def test_rouge_l_is_the_lcs_f1_without_stemming(prediction, reference, expected):
    assert generation_metrics([prediction], [reference])["rouge_l"] == pytest.approx(expected)


@pytest.mark.parametrize("prediction, reference, published", [
    # nltk.translate.meteor_score.single_meteor_score's docstring: hypothesis1 against reference1 → 0.6944.
    ("It is a guide to action which ensures that the military always obeys the commands of the party",
     "It is a guide to action that ensures that the military will forever heed Party commands", 0.6944),
    # nltk/test/meteor.doctest (Wikipedia's examples and issue #2751).
    ("on the mat sat the cat", "The cat sat on the mat", 0.5),
    ("The cat was sat on the mat", "The cat sat on the mat", 0.9654),
    ("creates or updates a virtual machine scale set", "create or update a vm set", 0.7806),
    ("John loves Mary", "The candidate has no alignment to any of the references", 0.0),
])
def test_meteor_reproduces_nltks_documented_values(prediction, reference, published):
    assert round(generation_metrics([prediction], [reference])["meteor"], 4) == published


def test_meteor_matches_synonyms_through_wordnet():
    # "car" ~ "auto" only through WordNet (car.n.01). One match: P = R = Fmean = 1, one chunk per match, so the
    # fragmentation penalty is 0.5 · (1/1)³ and METEOR = (1 - 0.5) · 1 = 0.5; without WordNet it would be 0.
    assert generation_metrics(["car"], ["auto"])["meteor"] == pytest.approx(0.5)


def test_exact_match_ignores_case_whitespace_and_surrounding_punctuation_only():
    predictions = ["  The  Cat. ", '"A DOG!"', "3.5", "red"]
    references = ["the cat", "a dog", "35", "blue"]
    assert generation_metrics(predictions, references)["exact_match"] == pytest.approx(2 / 4)


def test_token_statistics_and_empty_predictions():
    metrics = generation_metrics(["a b c", "", "  "], ["a b", "c d e f", "g"])
    assert set(metrics) == {"exact_match", "bleu4", "meteor", "rouge_l", "prediction_tokens_mean",
                            "reference_tokens_mean", "empty_predictions", "count"}
    assert metrics["prediction_tokens_mean"] == pytest.approx(3 / 3)
    assert metrics["reference_tokens_mean"] == pytest.approx((2 + 4 + 1) / 3)
    assert metrics["empty_predictions"] == pytest.approx(2 / 3)
    assert metrics["count"] == 3.0


@pytest.mark.parametrize("predictions, references, message", [
    (["a"], ["a", "b"], "expected one reference per prediction, got 1 predictions and 2 references"),
    ([], [], "expected at least one prediction to score, got none"),
])
def test_unusable_inputs_are_refused(predictions, references, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        generation_metrics(predictions, references)


def test_missing_wordnet_says_what_to_install(tmp_dirs, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_dirs("nltk-path"))])  # NLTK's own search list: empty
    source, data_dir = tmp_dirs("no-debian-wordnet"), tmp_dirs("nltk-data")
    with pytest.raises(WordNetMissing) as raised:
        ensure_wordnet(source, data_dir)
    message = str(raised.value)
    assert "\n" not in message and message.endswith(f"Debian: {INSTALL}")
    assert str(source) in message
    assert not wordnet_ready(source, data_dir)
    assert not (data_dir / "corpora").exists()


def test_bridge_lays_out_debians_files_for_nltk(tmp_dirs):
    import nltk

    data_dir = tmp_dirs("nltk-data")
    build(DEBIAN_WORDNET, data_dir)
    corpus = data_dir / "corpora" / "wordnet"
    assert sorted(path.name for path in corpus.iterdir()) == sorted([*DEBIAN_FILES, "lexnames"])
    lexnames = corpus.joinpath("lexnames").read_text().splitlines()
    # WordNet 3.0's lexnames(5WN): 45 files, number, name, syntactic category (1 noun … 4 adverb).
    assert len(lexnames) == 45
    assert lexnames[:4] == ["00\tadj.all\t3", "01\tadj.pert\t3", "02\tadv.all\t4", "03\tnoun.Tops\t1"]
    assert lexnames[28:30] == ["28\tnoun.time\t1", "29\tverb.body\t2"]
    assert lexnames[-1] == "44\tadj.ppl\t3"
    assert nltk.data.find("corpora/wordnet", paths=[str(data_dir)]) == str(corpus)
    # A second builder (another rank) finds the directory finished: its copy is dropped, the first one kept.
    build(DEBIAN_WORDNET, data_dir)
    assert [path.name for path in corpus.parent.iterdir()] == ["wordnet"]
