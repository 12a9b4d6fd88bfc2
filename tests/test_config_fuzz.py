"""Property tests: no input makes the config loader fail with anything but EdgekdError."""

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.config import PipelineConfig, load_pipeline, parse_pipeline
from edgekd.errors import EdgekdError

KEYS = sorted(set(PipelineConfig.model_fields) | {"temprature", "epochs", "model", "kind", "phases", "value", "lr"})
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from(["resnet8", "digits", "cosine", "phases", "-1", "1e9"]),
)
docs = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(docs)
def test_parse_pipeline_only_raises_edgekd_error(doc):
    try:
        parse_pipeline(doc)
    except EdgekdError as e:
        assert "\n" not in str(e)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_load_pipeline_on_arbitrary_text(tmp_path_factory, text):
    _load_or_one_line_error(tmp_path_factory, text)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["temperature", "soft_weight", "hard_weight", "epochs", "lr", "features", "augment"]),
        scalars | st.dictionaries(st.sampled_from(["kind", "start", "end", "value", "phases"]), scalars, max_size=3),
        max_size=4,
    )
)
def test_distill_section_variants(tmp_path_factory, distill):
    text = yaml.safe_dump(
        {"name": "f", "teacher": {"model": "resnet8"}, "student": {"model": "resnet8"}, "distill": distill}
    )
    _load_or_one_line_error(tmp_path_factory, text)


def _load_or_one_line_error(tmp_path_factory, text: str) -> None:
    """Load `text` as a pipeline file: it either loads or fails with a one-line EdgekdError."""
    path = tmp_path_factory.mktemp("fuzz") / "p.yaml"
    path.write_text(text)
    try:
        load_pipeline(path)
    except EdgekdError as e:
        assert "\n" not in str(e)
