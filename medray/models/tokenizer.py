"""Offline tokenizer for the tiny presets: byte-level BPE trained with ``tokenizers``.

It follows Qwen2's design (byte-level BPE, digits split, ChatML special tokens and
the vision markers Qwen2-VL needs) so that the tiny models take the same code paths
as the real Qwen-family checkpoints.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from medray.models.corpus import iter_corpus

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

# Qwen2's pre-tokenisation pattern: words, single digits, punctuation runs, whitespace.
_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

DEFAULT_SYSTEM = "You are a careful medical imaging assistant. Research use only."

# Qwen2-VL's chat template, with {% generation %} markers so trainers can compute the
# loss on assistant tokens only.
VLM_CHAT_TEMPLATE = (
    "{% macro render(content) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}{% for part in content %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM + "<|im_end|>\n"
    "{% endif %}"
    "{% if message['role'] == 'system' %}"
    "<|im_start|>system\n{{ render(message['content']) }}<|im_end|>\n"
    "{% else %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ render(message['content']) }}<|im_end|>{% endgeneration %}"
    "{% else %}{{ render(message['content']) }}<|im_end|>{% endif %}{{ '\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_tokenizer(vocab_size: int = 4096, seed: int = 0, n_sentences: int = 6000) -> Tokenizer:
    """Train a byte-level BPE tokenizer on the generated medical corpus (deterministic)."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(iter_corpus(n_sentences=n_sentences, seed=seed), trainer=trainer)
    return tok


def wrap_tokenizer(
    tok: Tokenizer, chat_template: str = VLM_CHAT_TEMPLATE
) -> PreTrainedTokenizerFast:
    """Wrap a trained tokenizer as a transformers fast tokenizer with ChatML specials."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        extra_special_tokens=[IM_START, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD],
        model_max_length=4096,
        padding_side="right",
    )
    fast.chat_template = chat_template
    return fast


def _filler(i: int) -> str:
    """A byte-level token string for filler id ``i`` (``Ġ`` + base-26 letters: " xyz")."""
    letters = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        letters = chr(97 + r) + letters
    return "\u0120zz" + letters


def pad_vocab(tok: Tokenizer, size: int) -> Tokenizer:
    """A copy of a trained BPE tokenizer whose vocabulary has exactly ``size`` ids.

    For benchmark builds at a real model's vocabulary size: the extra ids are filler
    tokens (``" zz<letters>"``) with no merges, so encoding text gives the same ids as
    before and never produces them, while decoding any id below ``size`` works (as it
    does for a model's randomly sampled ids).

    Raises:
        ValueError: ``size`` is smaller than the trained vocabulary.
    """
    import json

    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    have = max(vocab.values()) + 1
    if size < have:
        raise ValueError(f"cannot pad a vocabulary of {have} ids down to {size}")
    i = 0
    for new_id in range(have, size):
        while _filler(i) in vocab:
            i += 1
        vocab[_filler(i)] = new_id
        i += 1
    return Tokenizer.from_str(json.dumps(data))
