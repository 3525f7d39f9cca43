"""The public names are pinned: adding or removing one is a decision, not an accident."""

from __future__ import annotations

import chatgrammar as cg


def test_exported_members() -> None:
    assert sorted(cg.__all__) == sorted(
        [
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
            "load_format",
            "match_template",
            "register",
            "unregister",
            "get_format",
            "parse",
            "parse_completion",
            "render",
            "render_spans",
            "validate",
        ]
    )
    for name in cg.__all__:
        assert getattr(cg, name) is not None


def test_exception_tree() -> None:
    assert issubclass(cg.ChatGrammarError, ValueError)
    for e in (cg.ParseError, cg.RenderError, cg.UnknownFormatError, cg.GrammarError):
        assert issubclass(e, cg.ChatGrammarError)
    assert issubclass(cg.UnsafeContentError, cg.RenderError)
    assert issubclass(cg.UnsupportedConversationError, cg.RenderError)


def test_public_path_in_reprs() -> None:
    assert cg.ParseError.__module__ == "chatgrammar"
    assert repr(cg.Message(role="user", content="x")) == "Message(role='user', content='x', complete=True)"


def test_format_attributes() -> None:
    fmt = cg.get_format("llama2")
    assert fmt.name == "llama2"
    assert "llama-2" in fmt.aliases
    assert fmt.stop == ["</s>"]
    assert fmt.bos == "<s>" and fmt.eos == "</s>"
    assert fmt.roles == ["system", "user", "assistant"]
    assert fmt.grammar.startswith("// name: llama2")
    assert fmt.generation_prompt == ""
    assert cg.get_format("chatml").roles is None
    assert cg.get_format("chatml").generation_prompt == "<|im_start|>assistant\n"
    assert cg.get_format("vicuna").markers == ["USER:", "ASSISTANT:"]
    assert callable(fmt.render) and callable(fmt.parse) and callable(fmt.normalize)


def test_role_alias_reads_back_as_the_written_role() -> None:
    fmt = cg.get_format("llama3.1")
    msgs = [{"role": "user", "content": "run it"}, {"role": "tool", "content": "42"}]
    text = fmt.render(msgs)
    assert text.endswith('<|start_header_id|>ipython<|end_header_id|>\n\n"42"<|eot_id|>')
    assert fmt.parse(text)[-1] == cg.Message(role="ipython", content="42")
    assert fmt.normalize(msgs)[-1].role == "ipython"
