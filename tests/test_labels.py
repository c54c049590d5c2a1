from agent.labels import align

SENTIMENT = ["negative", "neutral", "positive"]


def test_exact_labels_map_to_themselves():
    a = align(["negative", "neutral", "positive"], SENTIMENT)
    assert a.mapping == {"negative": "negative", "neutral": "neutral", "positive": "positive"}
    assert a.complete and a.covers(SENTIMENT)


def test_abbreviations_map_through_synonyms():
    a = align(["NEG", "NEU", "POS"], SENTIMENT)
    assert a.mapping == {"NEG": "negative", "NEU": "neutral", "POS": "positive"}
    assert a.evidence["POS"] == "synonym"


def test_generic_labels_are_resolved_from_the_card():
    card = "Labels:\n- LABEL_0: negative\n- LABEL_1: neutral\n- LABEL_2: positive\n"
    a = align(["LABEL_0", "LABEL_1", "LABEL_2"], SENTIMENT, card)
    assert a.mapping == {"LABEL_0": "negative", "LABEL_1": "neutral", "LABEL_2": "positive"}
    assert "card says" in a.evidence["LABEL_2"]


def test_generic_labels_without_a_card_are_unmapped():
    a = align(["LABEL_0", "LABEL_1", "LABEL_2"], SENTIMENT)
    assert not a.covers(SENTIMENT)
    assert a.missing(SENTIMENT) == SENTIMENT


def test_star_ratings_map_many_to_one_and_invert_to_the_first():
    stars = ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]
    a = align(stars, SENTIMENT)
    assert a.complete and a.covers(SENTIMENT)
    assert a.mapping["2 stars"] == "negative"
    assert a.inverse(SENTIMENT) == {
        "negative": "1 star",
        "neutral": "3 stars",
        "positive": "4 stars",
    }


def test_toxicity_formats():
    binary = ["non-toxic", "toxic"]
    assert align(["neutral", "toxic"], binary).mapping == {"neutral": "non-toxic", "toxic": "toxic"}
    multilabel = align(["toxic", "severe_toxic", "obscene", "threat", "insult"], binary)
    assert not multilabel.covers(binary)


def test_binary_model_cannot_cover_three_sentiments():
    a = align(["negative", "positive"], SENTIMENT)
    assert a.missing(SENTIMENT) == ["neutral"]
