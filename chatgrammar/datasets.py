r"""Render, parse, convert and detect whole columns: batch functions for Hugging Face ``datasets`` and Ray Data.

Each function here returns a ``BatchFunction``: a small picklable object that holds format
names (each process looks them up once, on its first batch) and maps a batch of rows, given
as columns, to new columns. A row that fails (any ``ChatGrammarError``) gets the error's
message in the ``error`` column and None in the output column: one bad row never stops a job.

A batch is a dict of lists (``Dataset.map(fn, batched=True)``: the new columns are
returned), a pandas DataFrame (Ray Data's ``batch_format="pandas"``) or a dict of numpy
arrays (Ray's default format); for those two the batch is returned with its new columns
added, as Ray expects. ``apply`` runs a function over a whole dataset of either library::

    apply(ds, render_batch("chatml"), num_proc=2)   # datasets: ds.map(fn, batched=True, features=...)
    ds.map_batches(render_batch("chatml"), batch_format="pandas")   # Ray Data

Nothing here imports ``datasets``, ``pandas``, ``numpy`` or ``ray`` until a batch or
``BatchFunction.features`` needs it.

>>> fn = render_batch("chatml")
>>> out = fn({"messages": [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "<|im_end|>"}]]})
>>> out["text"]
['<|im_start|>user\nHi<|im_end|>\n', None]
>>> out["error"][1][:40]
"message 0 ('user') contains '<|im_end|>'"
"""

from __future__ import annotations

import importlib
import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

from ._api import convert
from ._errors import ChatGrammarError, RenderError
from ._format import Format
from ._inspect import detect
from ._registry import get_format

__all__ = ["BatchFunction", "apply", "convert_batch", "detect_batch", "parse_batch", "render_batch"]

# What each new column holds, for BatchFunction.features: a string, a list of messages,
# a list of tool definitions (both stored as JSON by datasets: their dicts keep their own keys).
_STRING, _MESSAGES, _TOOLS = "string", "messages", "tools"
# A table gives every message the keys any message of the column has, the missing ones None.
_REQUIRED = frozenset({"role", "content"})


class BatchFunction:
    """A function over a batch of rows: ``fn(batch)`` gives the new columns (see the module's docstring).

    It holds the names of its formats and of its columns, and its options; pickling it
    (``num_proc > 1``, Ray workers) sends only those, and each process looks its formats
    up again. A ``Format`` given as an object travels by name: a custom format must be
    registered (``chatgrammar.register``) in the processes that run the function.
    """

    def __init__(
        self,
        call: str,
        formats: Sequence[str | Format],
        inputs: Mapping[str, str | None],
        outputs: Mapping[str, tuple[str | None, str]],
        options: Mapping[str, Any],
    ) -> None:
        self._call = call
        self._loaded: tuple[Format, ...] | None = tuple(get_format(f) for f in formats)  # unknown names fail here
        self._names = tuple(f.name for f in self._loaded)
        self.inputs = dict(inputs)  # parameter -> column read (None: not read)
        self.outputs = {param: column for param, (column, _) in outputs.items()}  # (None: not written)
        self._kinds = {column: kind for column, kind in outputs.values() if column is not None}
        self.options = dict(options)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_loaded"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _loaded=None)

    def __repr__(self) -> str:
        args = [repr(n) for n in self._names]
        args += [f"{k}={v!r}" for k, v in {**self.inputs, **self.outputs, **self.options}.items()]
        return f"{self._call}({', '.join(args)})"

    def __call__(self, batch: Any) -> Any:
        """The new columns of ``batch`` (a dict of lists), or the batch with them (a DataFrame, a dict of arrays)."""
        frame = _is_dataframe(batch)
        if not frame and not isinstance(batch, Mapping):
            raise TypeError(
                f"a batch is a dict of columns or a pandas DataFrame, not {type(batch).__name__} "
                "(with Ray Data, pass batch_format='pandas' or 'numpy')"
            )
        columns = [_column(batch, name, param) for param, name in self.inputs.items() if name is not None]
        if self._loaded is None:
            self._loaded = tuple(get_format(name) for name in self._names)
        got = self._run(self._loaded, *columns)
        new = {column: got[param] for param, column in self.outputs.items() if column is not None}
        if frame:
            pandas = importlib.import_module("pandas")
            out = batch.copy(deep=False)
            for name, values in new.items():
                out[name] = pandas.Series(values, index=batch.index, dtype=object)
            return out
        if any(_is_array(batch[name]) for name in self.inputs.values() if name is not None):
            numpy = importlib.import_module("numpy")
            arrays = {}
            for name, values in new.items():
                arrays[name] = numpy.empty(len(values), dtype=object)
                arrays[name][:] = values
            return {**batch, **arrays}
        return new

    def _run(self, formats: tuple[Format, ...], *columns: list[Any]) -> dict[str, list[Any]]:
        """Each output parameter's values, one a row."""
        raise NotImplementedError

    def features(self, features: Mapping[str, Any] | None = None) -> Any:
        """The ``datasets.Features`` of a dataset with ``features`` once mapped: for ``Dataset.map(features=...)``.

        ``datasets`` fixes a column's type from the first batch it writes, and an ``error``
        column of a first batch with no error is all None; these types hold every batch.
        Messages and tool definitions are stored as ``Json`` (datasets 4.7 or later), so
        each message keeps its own keys.
        """
        ds = importlib.import_module("datasets")
        types = {_STRING: ds.Value("string"), _MESSAGES: ds.List(ds.Json()), _TOOLS: ds.List(ds.Json())}
        return ds.Features({**(features or {}), **{name: types[kind] for name, kind in self._kinds.items()}})


def _per_row(fn: Callable[[Any], Any], values: Iterable[Any]) -> tuple[list[Any], list[str | None]]:
    """``fn`` of each value (None where it raised a ChatGrammarError), and each row's error message."""
    out: list[Any] = []
    errors: list[str | None] = []
    for value in values:
        try:
            out.append(fn(value))
        except ChatGrammarError as e:
            out.append(None)
            errors.append(str(e))
        else:
            errors.append(None)
    return out, errors


class _Render(BatchFunction):
    def _run(self, formats: tuple[Format, ...], *columns: list[Any]) -> dict[str, list[Any]]:
        render = formats[0].render
        options = self.options

        def one(row: tuple[Any, Any]) -> str:
            value, defined = row
            if defined is None:
                return render(_messages(value), **options)
            return render(_messages(value), tools=_tools(defined), **options)

        tools = columns[1] if len(columns) > 1 else itertools.repeat(None)
        texts, errors = _per_row(one, zip(columns[0], tools, strict=False))
        return {"text": texts, "error": errors}


class _Parse(BatchFunction):
    def _run(self, formats: tuple[Format, ...], *columns: list[Any]) -> dict[str, list[Any]]:
        parse = formats[0].parse
        strict = self.options["strict"]

        def one(text: Any) -> tuple[list[dict[str, Any]], Any, str | None]:
            # Messages to dicts at once: a batch of Message objects kept alive slows the collector.
            read = parse(text if type(text) is str else _not_text(text), strict=strict)
            found = getattr(read, "diagnostics", None)  # strict=False: what it could not read
            return [m.to_dict() for m in read], getattr(read, "tools", None), "; ".join(map(str, found or ())) or None

        got, errors = _per_row(one, columns[0])
        return {
            "messages": [None if row is None else row[0] for row in got],
            "error": [error if row is None else row[2] for row, error in zip(got, errors, strict=True)],
            "tools": [None if row is None else row[1] for row in got],
        }


class _Convert(BatchFunction):
    def _run(self, formats: tuple[Format, ...], *columns: list[Any]) -> dict[str, list[Any]]:
        source, target = formats
        options = self.options
        texts, errors = _per_row(
            lambda text: convert(text if type(text) is str else _not_text(text), source, target, **options),
            columns[0],
        )
        return {"output": texts, "error": errors}


class _Detect(BatchFunction):
    def _run(self, formats: tuple[Format, ...], *columns: list[Any]) -> dict[str, list[Any]]:
        candidates = formats or None
        names: list[str | None] = []
        for text in columns[0]:
            ranked = detect(text, candidates) if type(text) is str else []
            names.append(ranked[0][0] if ranked else None)
        return {"output": names}


def render_batch(
    fmt: str | Format,
    *,
    messages: str = "messages",
    text: str = "text",
    error: str = "error",
    tools: str | Sequence[Any] | None = None,
    add_generation_prompt: bool = False,
    **render_options: Any,
) -> BatchFunction:
    r"""Render the conversations of column ``messages`` into column ``text``, in format ``fmt``.

    ``tools`` is the tool definitions: a str names a column holding each row's (a list of
    JSON schemas, or its JSON text), a list gives them for every row. ``render_options`` go to
    ``Format.render`` for every row (``date=``, ``enable_thinking=False``,
    ``on_unsafe="allow"``...). Keys a table filled in with None (a message without
    ``tool_calls`` in a column where others have them) are left out.

    >>> fn = render_batch("llama2", add_generation_prompt=True)
    >>> fn({"messages": [[{"role": "user", "content": "Hi", "tool_calls": None}]]})
    {'text': ['<s>[INST] Hi [/INST]'], 'error': [None]}
    """
    column = tools if isinstance(tools, str) else None
    if column is None and tools is not None:
        render_options["tools"] = tools
    return _Render(
        "render_batch",
        [fmt],
        {"messages": messages, "tools": column},
        {"text": (text, _STRING), "error": (error, _STRING)},
        {"add_generation_prompt": add_generation_prompt, **render_options},
    )


def parse_batch(
    fmt: str | Format,
    *,
    text: str = "text",
    messages: str = "messages",
    error: str = "error",
    tools: str | None = None,
    strict: bool = True,
) -> BatchFunction:
    r"""Read the texts of column ``text`` (prompts, transcripts) back into column ``messages``.

    Messages are dicts (``Message.to_dict``). A text that is not a document of ``fmt`` gets
    messages None and the ``ParseError`` in ``error``. ``strict=False`` reads truncated or
    damaged text: the messages read are kept, and ``error`` lists what could not be read
    (the ``Diagnostic`` lines), None for a clean text. ``tools`` names a column for the tool
    definitions each text lists (None where it lists none).

    >>> fn = parse_batch("chatml")
    >>> out = fn({"text": ["<|im_start|>user\nHi<|im_end|>\n", "Hi"]})
    >>> out["messages"]
    [[{'role': 'user', 'content': 'Hi'}], None]
    >>> out["error"][1].splitlines()[0]
    'expected "<|im_start|>" or end of text before "Hi" (line 1, column 1)'
    """
    return _Parse(
        "parse_batch",
        [fmt],
        {"text": text},
        {"messages": (messages, _MESSAGES), "error": (error, _STRING), "tools": (tools, _TOOLS)},
        {"strict": strict},
    )


def convert_batch(
    source_fmt: str | Format,
    target_fmt: str | Format,
    *,
    text: str = "text",
    output: str = "converted",
    error: str = "error",
    **render_options: Any,
) -> BatchFunction:
    r"""Rewrite the texts of column ``text`` from format ``source_fmt`` into column ``output``, in ``target_fmt``.

    As ``chatgrammar``'s ``convert``: each text is parsed strictly, then rendered with the
    tool definitions it lists; ``render_options`` go to the target's render (``date=``...).
    A conversation the target cannot write (a system message where it has none, content
    holding its delimiters) gets the reason in ``error``, never a silent loss.

    >>> fn = convert_batch("chatml", "llama2")
    >>> out = fn({"text": ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"]})
    >>> out["converted"]
    ['<s>[INST] Hi [/INST] Hello </s>']
    """
    return _Convert(
        "convert_batch",
        [source_fmt, target_fmt],
        {"text": text},
        {"output": (output, _STRING), "error": (error, _STRING)},
        render_options,
    )


def detect_batch(
    *, text: str = "text", output: str = "format", candidates: Sequence[str | Format] | None = None
) -> BatchFunction:
    r"""Name the format of each text of column ``text`` in column ``output`` (None: no format reads it).

    The best of ``chatgrammar.detect``; ``candidates`` limits the search, which makes it
    much faster than trying every registered format (``detect`` reads the text once per
    candidate).

    >>> fn = detect_batch(candidates=["chatml", "llama3", "llama2"])
    >>> fn({"text": ["<|im_start|>user\nHi<|im_end|>\n", "<s>[INST] Hi [/INST]", "Hi", None]})
    {'format': ['chatml', 'llama2', None, None]}
    """
    return _Detect("detect_batch", list(candidates or ()), {"text": text}, {"output": (output, _STRING)}, {})


def apply(dataset: Any, fn: BatchFunction, **kwargs: Any) -> Any:
    """Run ``fn`` over a whole dataset: ``datasets`` (Dataset, IterableDataset, DatasetDict) or Ray Data.

    For ``datasets``: ``dataset.map(fn, batched=True, features=fn.features(dataset.features), **kwargs)``
    (``num_proc=``, ``batch_size=``, ``remove_columns=``...). For a Ray ``Dataset``:
    ``dataset.map_batches(fn, batch_format="pandas", **kwargs)``. Each split of a DatasetDict is
    mapped with its own features.
    """
    if hasattr(dataset, "map_batches"):
        return dataset.map_batches(fn, batch_format="pandas", **kwargs)
    if isinstance(dataset, dict):
        return type(dataset)({split: apply(part, fn, **kwargs) for split, part in dataset.items()})
    features = getattr(dataset, "features", None)  # None for a streamed dataset whose features are unknown
    if features is not None:
        kwargs.setdefault("features", fn.features(features))
    return dataset.map(fn, batched=True, **kwargs)


def _is_dataframe(batch: Any) -> bool:
    return type(batch).__module__.partition(".")[0] == "pandas" and hasattr(batch, "columns")


def _is_array(column: Any) -> bool:
    return type(column).__module__.partition(".")[0] == "numpy"


def _column(batch: Any, name: str, param: str) -> list[Any]:
    """A column of the batch as a list: a numpy array or pandas Series is turned into one."""
    try:
        column = batch[name]
    except KeyError:
        have = ", ".join(repr(str(k)) for k in (batch.columns if _is_dataframe(batch) else batch))
        raise ValueError(f"the batch has no column {name!r} (it has {have}); name yours with {param}=...") from None
    if type(column) is list:
        return column
    tolist: Callable[[], list[Any]] | None = getattr(column, "tolist", None)
    return tolist() if tolist is not None else list(column)


def _messages(value: Any) -> Any:
    """A row's messages as render takes them: lists of dicts, without the keys a table filled with None."""
    if type(value) is list and all(type(m) is dict and len(m) == 2 for m in value):
        return value  # the common case, as it is
    if value is None or isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise RenderError(f"the row's messages must be a list of messages, not {type(value).__name__}")
    return [
        {k: _plain(v) for k, v in m.items() if v is not None or k in _REQUIRED} if isinstance(m, Mapping) else m
        for m in _plain(value)
    ]


def _plain(value: Any) -> Any:
    """``value`` with numpy arrays (Ray's and pandas' lists) as lists, inside lists and dicts too."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    tolist = getattr(value, "tolist", None)
    return _plain(tolist()) if tolist is not None else value


def _tools(value: Any) -> Any:
    """A row's tool definitions: a list of schemas, or its JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise RenderError(f"the row's tool definitions are not JSON: {e}") from None
    return _plain(value)


def _not_text(value: Any) -> NoReturn:
    """Refuse a text cell that holds no text (None...), as a row's error."""
    raise ChatGrammarError(f"the row's text must be a str, not {type(value).__name__}")
