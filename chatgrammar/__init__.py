"""chatgrammar: chat formats written once as grammars, rendered and parsed byte-exactly.

>>> import chatgrammar as cg
>>> text = cg.render([{"role": "user", "content": "Hi"}], "chatml", add_generation_prompt=True)
>>> cg.parse(text, "chatml")[-1]
Message(role='assistant', content='', complete=False)
"""

from ._api import parse, render
from ._errors import (
    ChatGrammarError,
    GrammarError,
    ParseError,
    RenderError,
    UnknownFormatError,
    UnsafeContentError,
    UnsupportedConversationError,
)
from ._format import Format, RolePolicy
from ._message import Message
from ._registry import formats, get_format

__all__ = [
    "ChatGrammarError",
    "Format",
    "GrammarError",
    "Message",
    "ParseError",
    "RenderError",
    "RolePolicy",
    "UnknownFormatError",
    "UnsafeContentError",
    "UnsupportedConversationError",
    "formats",
    "get_format",
    "parse",
    "render",
]

__version__ = "0.1.0"

# Tracebacks and reprs show the public path (chatgrammar.ParseError). Format keeps its
# module, so that doctest still finds the examples in its methods' docstrings.
for _name in __all__:
    if _name != "Format":
        globals()[_name].__module__ = "chatgrammar"
del _name
