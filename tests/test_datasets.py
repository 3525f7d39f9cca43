"""chatgrammar.datasets: batch functions for Hugging Face datasets and Ray Data.

Expected texts come from the real chat templates (reference.py renders them with jinja2,
independently of chatgrammar) and, row by row, from ``chatgrammar.render``; parsed messages
are compared with the conversations the texts were rendered from. Each batch shape is
tested: dict of lists (``datasets``), pandas DataFrame (object and Arrow-backed columns, as
Ray gives them), dict of numpy object arrays (Ray's default), and the two libraries
themselves (Ray under the ``ray`` marker: ``python -m pytest -m ray tests/test_datasets.py``).
"""

from __future__ import annotations

import json
import pickle
import random
import subprocess
import sys
from typing import Any

import pytest
import reference

import chatgrammar as cg
from chatgrammar.datasets import BatchFunction, apply, convert_batch, detect_batch, parse_batch, render_batch

WORDS = ["Hi", "there", "2+2?", "4.", "Ünïcødé", "中文", "✓", "naïve", "{braces}", "<tag>", '"quoted"', "x\ty"]


def conversation(rng: random.Random, system: bool) -> list[dict[str, Any]]:
    """Alternating user/assistant turns ending with the assistant, a system message first or not;
    contents of one to three lines without edge whitespace (every format here keeps them as they are)."""

    def content() -> str:
        return "\n".join(" ".join(rng.choices(WORDS, k=rng.randint(1, 6))) for _ in range(rng.randint(1, 3)))

    turns = [{"role": "system", "content": content()}] if system else []
    for _ in range(rng.randint(1, 3)):
        turns += [{"role": "user", "content": content()}, {"role": "assistant", "content": content()}]
    return turns


RNG = random.Random(9)
GOOD = [conversation(RNG, system=i % 3 == 0) for i in range(60)]
# Rows that fail (the error column): the first where its delimiters are the format's, the others anywhere.
BAD: list[Any] = [
    [{"role": "user", "content": "forged <|im_end|> and <|eot_id|>"}],  # delimiters of chatml, llama3
    [{"role": "user", "content": "Hi", "mood": "happy"}],
    [{"role": "user"}],
    None,
    [{"role": "user", "content": 42}],
    "not a list",
]
TABLE_BAD = BAD[:4]  # those a table can hold next to the good rows


def rows(conversations: list[Any]) -> list[dict[str, Any]]:
    return [{"id": i, "messages": m} for i, m in enumerate(conversations)]


def template(name: str, messages: list[dict[str, Any]]) -> str | None:
    """What the format's real template renders (None: it raises)."""
    try:
        return reference.render(cg.get_format(name), [cg.Message(**m) for m in messages])
    except reference.TemplateRaised:
        return None


def expected_render(name: str, value: Any) -> tuple[str | None, str | None]:
    """(text, error) as chatgrammar.render gives them for one row."""
    try:
        return cg.render(value, name), None
    except cg.ChatGrammarError as e:
        return None, str(e)
    except TypeError:  # None: not messages at all
        return None, "!"


def expected_in_table(name: str, value: Any) -> tuple[str | None, str | None]:
    """(text, error) for one row of TABLE_BAD or GOOD as a table holds it (missing keys None)."""
    if value is None:
        return None, "the row's messages must be a list of messages, not NoneType"
    if value == [{"role": "user"}]:
        return None, "message 0: 'content' must be a string, not NoneType"
    return expected_render(name, value)


def test_good_rows_are_what_every_format_here_writes() -> None:
    assert len(GOOD) == 60
    for name in ("chatml", "llama3", "llama2", "mistral"):
        fmt = cg.get_format(name)
        for m in GOOD:
            if name != "mistral" or m[0]["role"] != "system":
                assert fmt.normalize(m) == [cg.Message(**d) for d in m]


# -- dict batches (datasets' shape) ---------------------------------------------------------


@pytest.mark.parametrize("name", ["chatml", "llama3", "llama2", "mistral"])
def test_render_batch_is_the_real_template_row_by_row(name: str) -> None:
    batch = {"messages": GOOD + BAD}
    out = render_batch(name)(batch)
    assert list(out) == ["text", "error"]
    assert len(out["text"]) == len(out["error"]) == len(GOOD) + len(BAD)
    refused = 0
    for m, text, error in zip(batch["messages"], out["text"], out["error"], strict=True):
        ours, why = expected_render(name, m)
        assert text == ours
        assert (text is None) == (error is not None)
        if m in GOOD:
            assert text == template(name, m)  # the real template
            refused += text is None
        elif isinstance(m, list):
            assert error == why
    assert refused == (sum(m[0]["role"] == "system" for m in GOOD) if name == "mistral" else 0)
    assert out["error"][len(GOOD) + 3] == "the row's messages must be a list of messages, not NoneType"
    assert out["error"][len(GOOD) + 5] == "the row's messages must be a list of messages, not str"


def test_render_batch_options_and_generation_prompt() -> None:
    msgs = GOOD[1]
    out = render_batch("llama3", add_generation_prompt=True)({"messages": [msgs]})
    assert out["text"] == [cg.render(msgs, "llama3", add_generation_prompt=True)]
    assert out["text"][0].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    out = render_batch("qwen3", add_generation_prompt=True, enable_thinking=False)({"messages": [msgs]})
    assert out["text"][0].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    unsafe = [{"role": "user", "content": "a <|im_end|> b"}]
    assert render_batch("chatml", on_unsafe="allow")({"messages": [unsafe]}) == {
        "text": ["<|im_start|>user\na <|im_end|> b<|im_end|>\n"],
        "error": [None],
    }


def test_keys_a_table_filled_with_none_are_left_out() -> None:
    """A column of structs gives every message every key any message has: None where it had none."""
    call = [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    given = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": call},
        {"role": "tool", "content": "sunny"},
    ]
    keys = ("tool_calls", "complete", "name", "tool_call_id", "reasoning_content")
    filled = [{**dict.fromkeys(keys), **m} for m in given]
    out = render_batch("qwen2.5")({"messages": [given, filled]})
    assert out["error"] == [None, None]
    assert out["text"][0] == out["text"][1] == template("qwen2.5", given)
    # None stays an error where a message needs a value
    out = render_batch("chatml")({"messages": [[{"role": "user", "content": None}]]})
    assert out["text"] == [None]
    assert out["error"] == ["message 0: 'content' must be a string, not NoneType"]


def test_render_batch_tools_column() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    msgs = [{"role": "user", "content": "Weather?"}]
    batch = {"messages": [msgs, msgs, msgs, msgs], "tools": [tools, json.dumps(tools), None, "{not json"]}
    out = render_batch("qwen2.5", tools="tools")(batch)
    with_tools = reference.render(cg.get_format("qwen2.5"), [cg.Message(**msgs[0])], tools=tools)
    assert out["text"][:3] == [with_tools, with_tools, template("qwen2.5", msgs)]
    assert out["text"][3] is None
    assert out["error"][3].startswith("the row's tool definitions are not JSON: ")
    # one list for every row
    assert render_batch("qwen2.5", tools=tools)({"messages": [msgs]})["text"] == [with_tools]


@pytest.mark.parametrize("name", ["chatml", "llama3"])
def test_parse_batch_gives_the_conversations_back(name: str) -> None:
    texts = [cg.render(m, name) for m in GOOD]
    other = "llama3" if name == "chatml" else "chatml"
    broken = [template(other, GOOD[0]), "plain text", None]
    out = parse_batch(name)({"text": texts + broken})
    assert list(out) == ["messages", "error"]
    assert out["messages"][: len(GOOD)] == GOOD
    assert out["error"][: len(GOOD)] == [None] * len(GOOD)
    assert out["messages"][len(GOOD) :] == [None] * 3
    for text, error in zip(broken[:2], out["error"][len(GOOD) :], strict=False):
        with pytest.raises(cg.ParseError) as raised:
            cg.parse(text, name)
        assert error == str(raised.value)
    assert out["error"][-1] == "the row's text must be a str, not NoneType"


def test_parse_batch_not_strict_keeps_what_it_read() -> None:
    text = cg.render(GOOD[1], "chatml")
    out = parse_batch("chatml", strict=False, error="problems")({"text": [text, text[:-5]]})
    assert out["messages"][0] == GOOD[1]
    assert out["messages"][1][:-1] == GOOD[1][:-1]
    assert out["messages"][1][-1] == {**GOOD[1][-1], "complete": False}
    assert out["problems"][0] is None
    assert out["problems"][1] == "; ".join(str(d) for d in cg.parse(text[:-5], "chatml", strict=False).diagnostics)
    assert out["problems"][1].split(": ")[1].startswith("truncated")


def test_parse_batch_tools_column() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    call = [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": call},
    ]
    texts = [reference.render(cg.get_format("qwen2.5"), [cg.Message(**m) for m in msgs], tools=tools)]
    texts.append(template("qwen2.5", msgs[:2]))
    out = parse_batch("qwen2.5", tools="defined")({"text": texts})
    assert out["messages"] == [msgs, msgs[:2]]
    assert out["defined"] == [tools, None]
    # and back: the same text, from the same messages and definitions
    back = render_batch("qwen2.5", tools="defined")(out)
    assert back["text"] == texts


def test_convert_batch_is_the_target_template() -> None:
    texts = [cg.render(m, "chatml") for m in GOOD] + ["<|im_start|>user\nHi<|im_end|>", None]
    out = convert_batch("chatml", "llama3", output="llama3")({"text": texts})
    assert list(out) == ["llama3", "error"]
    assert out["llama3"][: len(GOOD)] == [template("llama3", m) for m in GOOD]
    assert out["llama3"][len(GOOD) :] == [None, None]
    assert out["error"][len(GOOD)].startswith('expected "\\n" (at end of text)')
    # what the target cannot write is an error, not a crash, and nothing is dropped
    out = convert_batch("chatml", "mistral")({"text": texts[: len(GOOD)]})
    for m, converted, error in zip(GOOD, out["converted"], out["error"], strict=True):
        if m[0]["role"] == "system":
            assert converted is None
            assert error.startswith("Only user and assistant roles are supported!")
        else:
            assert (converted, error) == (template("mistral", m), None)


def test_detect_batch_names_the_format() -> None:
    names = ["chatml", "llama3", "llama2", "gemma"]
    texts, truth = [], []
    for i, m in enumerate(GOOD):
        name = names[i % len(names)]
        m = m[1:] if name == "gemma" and m[0]["role"] == "system" else m
        texts.append(template(name, m))
        truth.append(name)
    texts += ["just some text", None]
    truth += [None, None]
    out = detect_batch(candidates=names, output="label")({"text": texts})
    assert out == {"label": truth}


def test_detect_batch_every_format() -> None:
    text = template("llama3", GOOD[0])
    assert detect_batch()({"text": [text, ""]}) == {"format": ["llama3", None]}


# -- the function object --------------------------------------------------------------------


def test_functions_pickle_small_and_find_their_formats_again() -> None:
    for fn in (
        render_batch("chatml", add_generation_prompt=True),
        parse_batch("llama3", strict=False),
        convert_batch("chatml", cg.get_format("llama3")),
        detect_batch(candidates=["chatml", "llama3"]),
    ):
        data = pickle.dumps(fn)
        assert len(data) < 1000
        assert b"Lark" not in data
        again = pickle.loads(data)
        assert isinstance(again, BatchFunction)
        assert repr(again) == repr(fn)
        batch = {"messages": GOOD[:5], "text": [cg.render(m, "chatml") for m in GOOD[:5]]}
        assert again(batch) == fn(batch)


def test_repr_is_the_call() -> None:
    assert repr(convert_batch("chatml", "meta-llama/Meta-Llama-3-8B-Instruct", date=None)) == (
        "convert_batch('chatml', 'llama3', text='text', output='converted', error='error', date=None)"
    )


def test_usage_errors_are_raised_not_collected() -> None:
    with pytest.raises(cg.UnknownFormatError, match="Did you mean 'chatml'"):
        render_batch("chatmll")
    with pytest.raises(ValueError, match=r"the batch has no column 'messages' \(it has 'conversation'\); name yours"):
        render_batch("chatml")({"conversation": [GOOD[0]]})
    with pytest.raises(TypeError, match="a batch is a dict of columns or a pandas DataFrame, not list"):
        render_batch("chatml")([GOOD[0]])


def test_importing_the_module_imports_no_dataframe_library() -> None:
    heavy = "{'datasets', 'pandas', 'numpy', 'ray', 'pyarrow'}"
    code = f"import sys, chatgrammar.datasets; print(sorted({heavy} & set(sys.modules)))"
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert got.stdout == "[]\n"


# -- pandas and numpy batches (Ray Data's shapes) ---------------------------------------------


def test_pandas_batches() -> None:
    pd = pytest.importorskip("pandas")
    conversations = GOOD[:8] + BAD[:2]
    frame = pd.DataFrame(rows(conversations))
    out = render_batch("chatml")(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["id", "messages", "text", "error"]
    assert list(out.index) == list(frame.index)
    assert list(frame.columns) == ["id", "messages"]  # the batch given is left as it was
    plain = render_batch("chatml")({"messages": conversations})
    assert out["text"].tolist() == plain["text"]
    assert out["error"].tolist() == plain["error"]
    parsed = parse_batch("chatml")(out.iloc[:8])
    assert parsed["messages"].tolist() == GOOD[:8]
    assert parsed["error"].tolist() == [None] * 8


def test_arrow_backed_pandas_batches() -> None:
    """Ray gives pandas batches with Arrow-backed columns: messages are lists of dicts, every key in each."""
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    call = [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]
    with_call = [{"role": "user", "content": "Go"}, {"role": "assistant", "content": "", "tool_calls": call}]
    table = pa.Table.from_pylist(rows([*GOOD[:4], with_call]))
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)
    assert frame["messages"].iloc[0][0]["tool_calls"] is None  # the table filled it in
    out = render_batch("qwen2.5")(frame)
    assert out["error"].tolist() == [None] * 5
    assert out["text"].tolist() == [template("qwen2.5", m) for m in [*GOOD[:4], with_call]]


def object_array(values: list[Any]) -> Any:
    np = pytest.importorskip("numpy")
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def as_ray_gives_it(value: Any) -> Any:
    """Lists as numpy object arrays, inside dicts too: Ray's numpy batches of nested columns."""
    if isinstance(value, dict):
        return {k: as_ray_gives_it(v) for k, v in value.items()}
    if isinstance(value, list):
        return object_array([as_ray_gives_it(v) for v in value])
    return value


def test_numpy_batches() -> None:
    np = pytest.importorskip("numpy")
    call = [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]
    with_call = [{"role": "user", "content": "Go"}, {"role": "assistant", "content": "", "tool_calls": call}]
    conversations = [*GOOD[:6], with_call, BAD[0]]
    batch = {"id": np.arange(8), "messages": object_array([as_ray_gives_it(m) for m in conversations])}
    assert isinstance(batch["messages"][6][1]["tool_calls"], np.ndarray)
    out = render_batch("qwen2.5")(batch)
    assert list(out) == ["id", "messages", "text", "error"]
    assert out["id"] is batch["id"]
    assert isinstance(out["text"], np.ndarray) and out["text"].dtype == object
    assert out["text"].tolist() == [template("qwen2.5", m) for m in conversations[:7]] + [None]
    assert out["error"].tolist()[:7] == [None] * 7
    texts = {"text": object_array(out["text"].tolist()[:7])}
    parsed = parse_batch("qwen2.5")(texts)
    assert parsed["error"].tolist() == [None] * 7
    default = [{"role": "system", "content": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."}]
    assert parsed["messages"].tolist() == [m if m[0]["role"] == "system" else default + m for m in conversations[:7]]
    assert detect_batch(candidates=["qwen2.5", "llama3"])(texts)["format"].tolist() == ["qwen2.5"] * 7


# -- Hugging Face datasets ------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf() -> Any:
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    return datasets


def test_datasets_map(hf: Any) -> None:
    conversations = GOOD + TABLE_BAD
    random.Random(1).shuffle(conversations)
    ds = hf.Dataset.from_list(rows(conversations))
    fn = render_batch("llama3")
    # batches of 8: a first batch without errors has an error column of None only; features= types it
    out = ds.map(fn, batched=True, batch_size=8, features=fn.features(ds.features))
    assert out.column_names == ["id", "messages", "text", "error"]
    assert out["id"] == list(range(len(conversations)))
    for m, text, error in zip(conversations, out["text"], out["error"], strict=True):
        assert (text, error) == expected_in_table("llama3", m)
        if m in GOOD:
            assert text == template("llama3", m)
    clean = out.filter(lambda error: error is None, input_columns="error")
    originals = [m for m, error in zip(conversations, out["error"], strict=True) if error is None]
    assert len(clean) == len(originals) == len(GOOD)
    assert apply(ds, fn, batch_size=8)["text"] == out["text"]

    # read back, and converted, as datasets gives the texts
    parsed = apply(clean, parse_batch("llama3", messages="read"), remove_columns=["text"])
    assert parsed["read"] == originals
    assert parsed.features["read"] == hf.List(hf.Json())
    converted = apply(clean, convert_batch("llama3", "chatml"))
    assert converted["converted"] == [template("chatml", m) for m in originals]


def test_datasets_map_with_two_processes(hf: Any) -> None:
    conversations = (GOOD + TABLE_BAD) * 3
    ds = hf.Dataset.from_list(rows(conversations))
    fn = render_batch("chatml")
    one = apply(ds, fn, batch_size=50)
    two = apply(ds, fn, batch_size=50, num_proc=2)
    assert two["text"] == one["text"] == [expected_in_table("chatml", m)[0] for m in conversations]
    assert two["error"] == one["error"]
    assert sum(e is not None for e in two["error"]) == 3 * 4
    detected = apply(two, detect_batch(candidates=["chatml", "llama3", "llama2"]), num_proc=2)
    assert detected["format"] == ["chatml" if e is None else None for e in two["error"]]


def test_datasets_keys_filled_with_none_and_splits(hf: Any) -> None:
    """datasets gives each message every key of the column; a DatasetDict maps split by split."""
    call = [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]
    with_call = [{"role": "user", "content": "Go"}, {"role": "assistant", "content": "", "tool_calls": call}]
    splits = hf.DatasetDict(
        train=hf.Dataset.from_list(rows([with_call, *GOOD[:3]])), test=hf.Dataset.from_list(rows(GOOD[3:5]))
    )
    assert splits["train"][1]["messages"][0]["tool_calls"] is None
    out = apply(splits, render_batch("qwen2.5"))
    assert out["train"]["text"] == [template("qwen2.5", m) for m in [with_call, *GOOD[:3]]]
    assert out["test"]["text"] == [template("qwen2.5", m) for m in GOOD[3:5]]
    assert out["train"]["error"] == [None] * 4


def test_datasets_streamed(hf: Any) -> None:
    """An IterableDataset is mapped lazily, batch by batch, as it is read."""
    ds = hf.Dataset.from_list(rows(GOOD[:10])).to_iterable_dataset()
    out = apply(ds, render_batch("llama2"), batch_size=4)
    assert [r["text"] for r in out] == [template("llama2", m) for m in GOOD[:10]]


# -- Ray Data (python -m pytest -m ray) ---------------------------------------------------------


def ray_test(fn: Any) -> Any:
    """Marked ``ray`` (deselected by default); Ray warns of its own deprecated settings as it starts."""
    return pytest.mark.ray(pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")(fn))


@pytest.fixture(scope="module")
def ray() -> Any:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@ray_test
@pytest.mark.parametrize("batch_format", ["pandas", "numpy"])
def test_ray_map_batches(ray: Any, batch_format: str) -> None:
    conversations = GOOD + BAD[:2]
    ds = ray.data.from_items(rows(conversations), override_num_blocks=4)
    out = ds.map_batches(render_batch("chatml"), batch_format=batch_format).take_all()
    out.sort(key=lambda r: r["id"])
    assert [r["id"] for r in out] == list(range(len(conversations)))
    assert [r["text"] for r in out] == [expected_render("chatml", m)[0] for m in conversations]
    assert [r["error"] for r in out] == [expected_render("chatml", m)[1] for m in conversations]
    assert [r["text"] for r in out[: len(GOOD)]] == [template("chatml", m) for m in GOOD]


@ray_test
def test_ray_read_back_and_convert(ray: Any) -> None:
    texts = [cg.render(m, "chatml") for m in GOOD] + ["plain text"]
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=3)
    ds = apply(ds, parse_batch("chatml"))
    ds = apply(ds, convert_batch("chatml", "llama3", error="convert_error"))
    out = sorted(ds.take_all(), key=lambda r: r["id"])
    assert [r["messages"] for r in out[:-1]] == GOOD
    assert [r["converted"] for r in out[:-1]] == [template("llama3", m) for m in GOOD]
    assert [r["error"] for r in out[:-1]] == [r["convert_error"] for r in out[:-1]] == [None] * len(GOOD)
    assert out[-1]["messages"] is None and out[-1]["converted"] is None
    assert out[-1]["error"].startswith('expected "<|im_start|>" or end of text before "plain text"')
    # the filter docs/datasets.md shows
    from ray.data.expressions import col

    assert sorted(r["id"] for r in ds.filter(expr=col("error").is_null()).take_all()) == list(range(len(GOOD)))
