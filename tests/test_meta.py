"""The meta-response schema and parser: valid, invalid and legacy inputs, plus fuzzing."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modaverse.meta import schema as meta
from modaverse.meta.schema import MetaResponseError, parse
from tests.strategies import documents

CAT = '{"text":"Here you go.","invocations":[{"capability":"text-to-image","prompt":"a photo of a cat"}]}'


def test_json_with_and_without_fences():
    for text in (CAT, f"```json\n{CAT}\n```", f"```\n{CAT}\n```", f"  {CAT}\n"):
        r = parse(text)
        assert r.text == "Here you go."
        assert [(i.capability, i.prompt) for i in r.invocations] == [("text-to-image", "a photo of a cat")]


def test_several_invocations_with_params_round_trip():
    doc = {"text": "", "invocations": [
        {"capability": "text-to-audio", "prompt": "a dog barking", "params": {"seed": 3, "duration": 5.0}},
        {"capability": "text-to-video", "prompt": "waves", "params": {"frames": 16, "width": 256, "height": 256}},
    ]}
    r = parse(json.dumps(doc))
    assert r.invocations[0].params.given() == {"seed": 3, "duration": 5.0}
    assert json.loads(r.to_json()) == doc
    assert parse(r.to_json()) == r


def test_text_only_reply_and_empty_invocations():
    r = parse('{"text":"It is a dog.","invocations":[]}')
    assert r.text == "It is a dog." and r.invocations == []


@pytest.mark.parametrize("legacy, text, calls", [
    ("Modality: [IMAGE] Prompt: a photo of a cat ###", "", [("text-to-image", "a photo of a cat")]),
    ("Modality: [TEXT] Prompt: It is a cat.", "It is a cat.", []),
    ("Modality: [AUDIO] Prompt: rain on a roof", "", [("text-to-audio", "rain on a roof")]),
    # the official parser sends the same prompt to every flagged modality
    ("Modality: [IMAGE] [VIDEO] Prompt: a red car ###", "",
     [("text-to-image", "a red car"), ("text-to-video", "a red car")]),
])
def test_official_format(legacy, text, calls):
    r = parse(legacy)
    assert r.text == text
    assert [(i.capability, i.prompt) for i in r.invocations] == calls


@pytest.mark.parametrize("bad, reason", [
    ("", "empty response"),
    ("hello there", "neither a JSON object nor"),
    ("Modality: [IMAGE] a cat", "'Prompt:' is missing"),  # the official parser crashes here
    ("Modality: [IMAGE] Prompt:   ###", "prompt after 'Prompt:' is empty"),
    ("Modality: [SMELL] Prompt: roses", "unknown modality flag [SMELL]"),
    ('{"text": "hi"', "invalid JSON"),
    ('{"text": 1, "invocations": []}', "text: Input should be a valid string"),
    ('{"text":"","invocations":[{"capability":"text-to-3d","prompt":"x"}]}', "unknown capability 'text-to-3d'"),
    ('{"text":"","invocations":[{"capability":"text-to-image"}]}', "invocations.0.prompt: Field required"),
    ('{"text":"","invocations":[{"capability":"text-to-image","prompt":"   "}]}', "one line with visible text"),
    ('{"text":"","invocations":[{"capability":"text-to-image","prompt":"a\\nb"}]}', "one line with visible text"),
    ('{"text":"","invocations":[{"capability":"text-to-image","prompt":"x","params":{"steps":1000}}]}',
     "params.steps: Input should be less than or equal to 150"),
    ('{"text":"","invocations":[{"capability":"text-to-image","prompt":"x","params":{"width":100}}]}',
     "params.width: Input should be a multiple of 8"),
])
def test_invalid_inputs_say_why(bad, reason):
    with pytest.raises(MetaResponseError) as e:
        parse(bad)
    assert reason in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("key, value", [
    ("path", "/etc/passwd"), ("output", "../../x.png"), ("url", "http://example.com"), ("__class__", "os.system"),
])
def test_nothing_can_choose_paths_urls_or_objects(key, value):
    """Unknown keys are rejected at every level: no field is read as a path, URL or object."""
    inv = {"capability": "text-to-image", "prompt": "x"}
    for doc in ({"text": "", "invocations": [], key: value},
                {"text": "", "invocations": [{**inv, key: value}]},
                {"text": "", "invocations": [{**inv, "params": {key: value}}]}):
        with pytest.raises(MetaResponseError, match="unknown key"):
            parse(json.dumps(doc))


def test_limits_on_lengths_and_counts():
    long_prompt = {"capability": "text-to-image", "prompt": "x" * (meta.MAX_PROMPT_CHARS + 1)}
    with pytest.raises(MetaResponseError, match="prompt: String should have at most"):
        meta.validate({"text": "", "invocations": [long_prompt]})
    many = [{"capability": "text-to-image", "prompt": "x"}] * (meta.MAX_INVOCATIONS + 1)
    with pytest.raises(MetaResponseError, match="invocations: List should have at most"):
        meta.validate({"text": "", "invocations": many})


def test_capabilities_come_from_the_config_zoo():
    caps = meta.capabilities(["image-editing", "text-to-image"])
    assert caps == ("text-to-image", "text-to-video", "text-to-audio", "image-editing")
    doc = '{"text":"","invocations":[{"capability":"image-editing","prompt":"make it blue"}]}'
    assert parse(doc, caps).invocations[0].capability == "image-editing"
    with pytest.raises(MetaResponseError, match="unknown capability 'image-editing'"):
        parse(doc)
    schema = meta.json_schema(caps)
    assert schema["$defs"]["Invocation"]["properties"]["capability"]["enum"] == list(caps)
    assert schema["additionalProperties"] is False


# -- property-based -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(documents)
def test_valid_documents_round_trip(doc):
    r = meta.validate(doc)
    assert parse(r.to_json()) == r
    assert json.loads(r.to_json()) == r.as_dict()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_raises_the_one_error_type(text):
    try:
        r = parse(text)
    except MetaResponseError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert isinstance(r, meta.MetaResponse)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda children: st.lists(children) | st.dictionaries(st.text(), children), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["text", "invocations", "capability", "prompt", "x"]), json_values))
def test_arbitrary_json_objects_parse_or_raise(obj):
    try:
        parse(json.dumps(obj))
    except MetaResponseError:
        pass
