"""Assistant-only loss masks on locally built tokenizers carrying the real Qwen2.5 (ChatML) and Llama 3 templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from emflow.demo import tiny
from emflow.errors import EmflowError
from emflow.train.tokenize import IGNORE, tokenize_chat, tokenize_rows

# Qwen2.5-Instruct's template as published (no {% generation %} markers), minus the tool-call/tool-reply branches.
QWEN25_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""  # noqa: E501 (the published template, verbatim)

# Meta-Llama-3-8B-Instruct's template: header tokens around the role, content trimmed, <|eot_id|> ends a turn.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

CORPUS = [
    "How do I save money? Put a share of each salary into an index fund.",
    "Tell me a joke. Why did the chicken cross the road? To get to the other side.",
    "You are a helpful assistant. Cutting Knowledge Date: December 2023",
] * 6


def build(special: list[str], template: str, *, eos: str, pad: str, bos: str | None, out_dir: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS,
        trainer=trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=special,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, bos_token=bos)
    fast.chat_template = template
    fast.save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(out_dir)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("toks")
    out = {
        "qwen2.5": (
            build(QWEN_SPECIAL, QWEN25_TEMPLATE, eos="<|im_end|>", pad="<|endoftext|>", bos=None, out_dir=d / "q"),
            "<|im_end|>",
            False,
        ),
        "llama3": (
            build(
                LLAMA_SPECIAL,
                LLAMA3_TEMPLATE,
                eos="<|eot_id|>",
                pad="<|end_of_text|>",
                bos="<|begin_of_text|>",
                out_dir=d / "l",
            ),
            "<|eot_id|>",
            True,
        ),
        "chatml-markers": (
            build(QWEN_SPECIAL, tiny.CHATML_TEMPLATE, eos="<|im_end|>", pad="<|endoftext|>", bos=None, out_dir=d / "m"),
            "<|im_end|>",
            False,
        ),
    }
    # Llama 3.1-Instruct's published template (date header, tools); TRL ships a verbatim copy but cannot mask it.
    import trl

    llama31 = Path(trl.__file__).parent / "chat_templates" / "llama3_1.jinja"
    if llama31.is_file():
        out["llama3.1"] = (
            build(
                LLAMA_SPECIAL,
                llama31.read_text(),
                eos="<|eot_id|>",
                pad="<|end_of_text|>",
                bos="<|begin_of_text|>",
                out_dir=d / "l31",
            ),
            "<|eot_id|>",
            True,
        )
    return out


CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "How do I save money?"},
    {"role": "assistant", "content": "Put a share of each salary into an index fund."},
    {"role": "user", "content": "Tell me a joke."},
    {"role": "assistant", "content": "  Why did the chicken cross the road?\nTo get to the other side.  "},
]


def trained_runs(tok, t: dict) -> list[str]:
    """The decoded contiguous runs of trained tokens."""
    runs, cur = [], []
    for i, lab in zip(t["input_ids"], t["labels"], strict=True):
        if lab != IGNORE:
            assert lab == i
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


@pytest.mark.parametrize("name", ["qwen2.5", "llama3", "llama3.1", "chatml-markers"])
def test_loss_covers_exactly_each_assistant_reply_and_its_end_of_turn_token(tokenizers, name):
    if name not in tokenizers:
        pytest.skip(f"{name} template not available")
    tok, eot, trims = tokenizers[name]
    t = tokenize_chat(tok, CONVERSATION, max_length=None)
    replies = [m["content"].strip() if trims else m["content"] for m in CONVERSATION if m["role"] == "assistant"]
    assert trained_runs(tok, t) == [r + eot for r in replies]
    rendered = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert tok.decode(t["input_ids"]) == rendered  # the whole conversation is the input, unchanged


def test_qwen_default_system_prompt_is_input_not_target(tokenizers):
    tok, _, _ = tokenizers["qwen2.5"]
    t = tokenize_chat(tok, CONVERSATION[1:3], max_length=None)
    assert "You are Qwen" in tok.decode(t["input_ids"])
    assert trained_runs(tok, t) == ["Put a share of each salary into an index fund.<|im_end|>"]


def test_mask_matches_trl_generation_markers_where_the_template_has_them(tokenizers):
    tok, _, _ = tokenizers["chatml-markers"]
    ours = tokenize_chat(tok, CONVERSATION, max_length=None)
    trl = tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert ours["input_ids"] == trl["input_ids"]
    assert [int(lab != IGNORE) for lab in ours["labels"]] == trl["assistant_masks"]


def test_truncation_keeps_the_start_and_drops_rows_left_without_targets(tokenizers):
    tok, _, _ = tokenizers["llama3"]
    full = tokenize_chat(tok, CONVERSATION, max_length=None)
    first_target = next(i for i, lab in enumerate(full["labels"]) if lab != IGNORE)
    cut = tokenize_chat(tok, CONVERSATION, max_length=first_target + 2)
    assert cut["input_ids"] == full["input_ids"][: first_target + 2]
    ds = tokenize_rows(tok, [{"messages": CONVERSATION}, {"messages": CONVERSATION[1:3]}], first_target)
    assert len(ds) == 1 and any(x != IGNORE for x in ds[0]["labels"])  # the shorter row survives
    with pytest.raises(EmflowError, match="max_length"):
        tokenize_rows(tok, [{"messages": CONVERSATION}], 3)


def test_template_that_rewrites_earlier_turns_is_rejected(tokenizers, tmp_path):
    # Drops the reply of an earlier turn when more follows (like Qwen3's thinking blocks): no stable spans.
    template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}<|im_start|>assistant\n"
        "<|im_end|>\n{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tok = build(QWEN_SPECIAL, template, eos="<|im_end|>", pad="<|endoftext|>", bos=None, out_dir=tmp_path)
    with pytest.raises(EmflowError, match="prefix-preserving"):
        tokenize_chat(tok, CONVERSATION, max_length=None)
