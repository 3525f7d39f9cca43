"""chatgrammar: chat formats written once as grammars, rendered and parsed byte-exactly.

>>> import chatgrammar as cg
>>> text = cg.render([{"role": "user", "content": "Hi"}], "chatml", add_generation_prompt=True)
>>> cg.parse(text, "chatml")[-1]
Message(role='assistant', content='', complete=False)
"""

from ._api import convert, parse, parse_completion, render, render_spans
from ._custom import from_gguf, from_pretrained, from_tokenizer_config, load_format
from ._derive import TemplateCaptureError, from_template, match_template
from ._errors import (
    ChatGrammarError,
    GrammarError,
    GrammarWarning,
    ParseError,
    RenderError,
    UnknownFormatError,
    UnsafeContentError,
    UnsupportedConversationError,
)
from ._format import Format, RolePolicy
from ._inspect import SAME_LANGUAGE, detect, validate
from ._message import Message
from ._registry import formats, get_format, register, unregister
from ._results import (
    Completion,
    ContentDelta,
    Diagnostic,
    Event,
    MessageEnd,
    MessageStart,
    Parsed,
    ReasoningDelta,
    Span,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from ._stream import StreamParser

__all__ = [
    "SAME_LANGUAGE",
    "ChatGrammarError",
    "Completion",
    "ContentDelta",
    "Diagnostic",
    "Event",
    "Format",
    "GrammarError",
    "GrammarWarning",
    "Message",
    "MessageEnd",
    "MessageStart",
    "ParseError",
    "Parsed",
    "ReasoningDelta",
    "RenderError",
    "RolePolicy",
    "Span",
    "StreamParser",
    "TemplateCaptureError",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "UnknownFormatError",
    "UnsafeContentError",
    "UnsupportedConversationError",
    "convert",
    "detect",
    "formats",
    "from_gguf",
    "from_pretrained",
    "from_template",
    "from_tokenizer_config",
    "get_format",
    "load_format",
    "match_template",
    "parse",
    "parse_completion",
    "render",
    "register",
    "render_spans",
    "unregister",
    "validate",
]

__version__ = "0.1.0"

# Tracebacks and reprs show the public path (chatgrammar.ParseError). Format keeps its
# module, so that doctest still finds the examples in its methods' docstrings.
for _name in __all__:
    if _name not in ("Format", "SAME_LANGUAGE", "Event"):
        globals()[_name].__module__ = "chatgrammar"
del _name
