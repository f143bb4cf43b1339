"""Hypothesis strategies for meta-responses, shared by the schema and grammar tests."""

from hypothesis import strategies as st

from modaverse.meta import schema as meta

visible = st.text(st.characters(codec="utf-8", exclude_characters="<"), min_size=0, max_size=40)
prompts = visible.filter(lambda s: s.strip() and s.isprintable())
params = st.fixed_dictionaries({}, optional={
    "seed": st.integers(0, 2**32 - 1),
    "steps": st.integers(1, 150),
    "guidance": st.floats(0, 30, allow_nan=False).map(lambda x: round(x, 2)),
    "width": st.integers(8, 256).map(lambda n: n * 8),
    "height": st.integers(8, 256).map(lambda n: n * 8),
    "frames": st.integers(1, 128),
    "duration": st.floats(0.5, 60, allow_nan=False).map(lambda x: round(x, 2)),
})
invocations = st.builds(lambda c, p, k: {"capability": c, "prompt": p, **({"params": k} if k else {})},
                        st.sampled_from(meta.BUILTIN_CAPABILITIES), prompts, params)
documents = st.builds(lambda t, inv: {"text": t, "invocations": inv}, visible,
                      st.lists(invocations, max_size=meta.MAX_INVOCATIONS))
