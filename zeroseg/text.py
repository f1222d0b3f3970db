"""The CLIP text side, self-contained for inference: text tower, tokenizer, prompts, class names.

A checkpoint carries the teacher's text tower as `{"config": JSON, "state_dict": tensors}`
(`zeroseg.teacher.text_state.text_state_from_clip`), so segmenting, exporting and benchmarking never
need open_clip's pretrained weights or the network: `TextEncoder.from_state` rebuilds the tower with
open_clip's own classes and gives bit-identical embeddings to `clip_model.encode_text`.

Class embeddings follow the standard zero-shot recipe (CLIP's notebook, open_clip's
`build_zero_shot_classifier`): every synonym x template is embedded and L2-normalised, the vectors of
one class are averaged and the mean is re-normalised.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

from zeroseg.classes import IMAGENET_TEMPLATES, check_templates, parse_class_names
from zeroseg.errors import ZerosegError

TEXT_FORMAT = "zeroseg-text"
TEXT_VERSION = 1
#: Tokenizer name meaning open_clip's CLIP BPE `SimpleTokenizer` (shipped with open_clip, offline).
SIMPLE_TOKENIZER = "clip"


class SubsetTokenizer:
    """open_clip's CLIP BPE tokenizer followed by a map onto a pruned vocabulary.

    A small teacher trained on a closed caption set (ShapeWorld) uses only a few hundred of CLIP's
    49,408 BPE tokens; keeping just their embedding rows makes its text tower ~100x smaller. Kept
    ids keep their order (so end-of-text stays the largest id and CLIP's argmax pooling still finds
    it); id 0 (padding) stays 0; every token outside the subset maps to the unknown id 1.
    """

    UNKNOWN = 1

    def __init__(self, base, token_subset: Sequence[int]):
        self.base = base
        self.context_length = base.context_length
        kept = sorted({int(t) for t in token_subset} - {0})
        self.table = torch.full((len(base.encoder),), self.UNKNOWN, dtype=torch.long)
        self.table[0] = 0
        self.table[torch.tensor(kept, dtype=torch.long)] = torch.arange(2, len(kept) + 2)

    @staticmethod
    def vocab_size(token_subset: Sequence[int]) -> int:
        """Rows of the pruned embedding table: padding, unknown, then the kept tokens."""
        return len({int(t) for t in token_subset} - {0}) + 2

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        return self.table[self.base(texts, context_length)]

    def unknown_words(self, texts: Sequence[str]) -> list[str]:
        """The words of `texts` (split on spaces, punctuation stripped) with a token outside the
        vocabulary, in order of first appearance, each once."""
        found: dict[str, bool] = {}
        for text in texts:
            for word in str(text).split():
                word = word.strip(_PUNCTUATION)
                if word and word not in found:
                    ids = torch.tensor(self.base.encode(word), dtype=torch.long)
                    found[word] = bool((self.table[ids] == self.UNKNOWN).any()) if ids.numel() else False
        return [word for word, unknown in found.items() if unknown]


def check_known_words(tokenizer, names: Sequence[str]) -> None:
    """Report the words of class `names` that `tokenizer` does not know (`report_unknown_words`).

    Only a pruned vocabulary (`SubsetTokenizer`) has unknown words: CLIP's BPE spells any word.

    Args:
        tokenizer: the tokenizer the names go through.
        names: the class names (synonyms), not the prompts.
    """
    if isinstance(tokenizer, SubsetTokenizer):
        report_unknown_words(tokenizer.unknown_words(names))


#: Characters stripped from a word's ends before it is looked up (sentence punctuation of templates).
_PUNCTUATION = ".,;:!?\"'()[]"
_STRICT_VOCAB: ContextVar[bool] = ContextVar("zeroseg_strict_vocab", default=False)
_WARNED: dict = {}
#: Unknown words a message lists by name (the rest are counted).
_LISTED = 8


class UnknownWordsWarning(UserWarning):
    """Class names with words the model's (pruned) vocabulary lacks: they all map to one token."""


@contextmanager
def vocabulary_policy(*, strict: bool) -> Iterator[None]:
    """Within the block, unknown words in class names are refused (`strict`, `--strict-vocab`) or
    warned about (the default, also outside any block).

    Args:
        strict: raise a ZerosegError instead of warning.
    """
    token = _STRICT_VOCAB.set(bool(strict))
    try:
        yield
    finally:
        _STRICT_VOCAB.reset(token)


def report_unknown_words(words: Sequence[str]) -> None:
    """Warn in one line (`UnknownWordsWarning`, each list of words once per process) that `words`
    are unknown to the tokenizer, or refuse them under `vocabulary_policy(strict=True)`.

    Raises:
        ZerosegError: strict mode and at least one unknown word.
    """
    if not words:
        return
    names = ", ".join(repr(w) for w in words[:_LISTED]) + (
        f" (and {len(words) - _LISTED} more)" if len(words) > _LISTED else ""
    )
    why = (
        f"the model's vocabulary does not know {names}: every unknown word maps to the same token, so "
        "classes named only by them get identical embeddings"
    )
    if _STRICT_VOCAB.get():
        raise ZerosegError(f"{why}; use words the model knows (or drop --strict-vocab to go on)")
    # warn_explicit with no source file: the warning prints as one line, and once per word list
    warnings.warn_explicit(
        f"{why}; name the classes with words it was trained on (--strict-vocab refuses them)",
        UnknownWordsWarning, filename="zeroseg", lineno=0, module="zeroseg.text", registry=_WARNED,
    )  # fmt: skip


def make_tokenizer(name: str, context_length: int, token_subset: Sequence[int] | None = None):
    """open_clip's tokenizer for `name` ("clip" or an open_clip model name), padding to context_length.

    token_subset: original CLIP BPE ids of a pruned vocabulary (see `SubsetTokenizer`).
    """
    import open_clip

    if name in (SIMPLE_TOKENIZER, "simple", ""):
        base = open_clip.SimpleTokenizer(context_length=context_length)
        return SubsetTokenizer(base, token_subset) if token_subset else base
    if token_subset:
        raise ZerosegError("a pruned vocabulary (token_subset) needs the CLIP BPE tokenizer 'clip'")
    if name not in open_clip.list_models() and not name.startswith(("hf-hub:", "local-dir:")):
        raise ZerosegError(
            f"unknown tokenizer {name!r}: use 'clip' (CLIP BPE) or an open_clip model name such as ViT-B-16"
        )
    try:
        return open_clip.get_tokenizer(name, context_length=context_length)
    except Exception as exc:  # HF tokenizers need their files from the Hub
        raise ZerosegError(
            f"cannot load the tokenizer of {name} ({type(exc).__name__}): it needs Hugging Face files; "
            "run once with network access to fill the HF cache"
        ) from None


class TextEncoder(nn.Module):
    """open_clip's text tower rebuilt from data, plus its tokenizer and the teacher's logit scale.

    Built in eval mode with frozen weights; the tokenizer is made on first use.

    Args:
        config: the JSON config: format, version, embed_dim, text_cfg (open_clip CLIPTextCfg
            fields), quick_gelu, tokenizer, context_length, logit_scale and, for a pruned
            vocabulary, token_subset.
        state_dict: the tower's weights (None: freshly initialised).

    Raises:
        ZerosegError: not a zeroseg text config, a newer format version, a context length longer
            than the tower's positions, or weights that do not fit the config.
    """

    def __init__(self, config: dict, state_dict: dict[str, torch.Tensor] | None = None):
        super().__init__()
        from open_clip.model import _build_text_tower

        if config.get("format") != TEXT_FORMAT:
            raise ZerosegError(f"not a zeroseg text-tower config (format={config.get('format')!r})")
        if int(config.get("version", 0)) > TEXT_VERSION:
            raise ZerosegError(
                f"text tower format version {config['version']} is newer than this zeroseg "
                f"(supports {TEXT_VERSION}): upgrade zeroseg"
            )
        self.config = dict(config)
        self.tower = _build_text_tower(
            int(config["embed_dim"]), dict(config["text_cfg"]), quick_gelu=bool(config["quick_gelu"])
        )
        self.context_length = int(config["context_length"])
        if self.context_length > self.tower.num_pos:
            raise ZerosegError(
                f"tokenizer context length {self.context_length} exceeds the text tower's "
                f"{self.tower.num_pos} positions"
            )
        self.logit_scale = float(config.get("logit_scale", 100.0))
        self._tokenizer = None
        if state_dict is not None:
            missing, unexpected = self.tower.load_state_dict(state_dict, strict=False)
            if missing or unexpected:
                raise ZerosegError(
                    f"text tower weights do not fit its config (missing {sorted(missing)[:3]}, "
                    f"unexpected {sorted(unexpected)[:3]}): the checkpoint is damaged or from another model"
                )
        self.eval()
        self.requires_grad_(False)

    @classmethod
    def from_state(cls, state: dict) -> TextEncoder:
        """Rebuild a text encoder from saved data (inverse of `text_state_from_clip` / `state()`).

        Args:
            state: `{"config": ..., "state_dict": ...}`, e.g. a checkpoint's `text` entry.

        Returns:
            The `TextEncoder` on the CPU, in eval mode.

        Raises:
            ZerosegError: `state` lacks either key, or `TextEncoder` refuses it.
        """
        if not isinstance(state, dict) or "config" not in state or "state_dict" not in state:
            raise ZerosegError("text state must be a dict with 'config' and 'state_dict'")
        return cls(state["config"], state["state_dict"])

    def state(self) -> dict:
        """{"config": JSON, "state_dict": CPU tensors}, loadable with torch.load(weights_only=True)."""
        sd = {k: v.detach().to("cpu").clone() for k, v in self.tower.state_dict().items()}
        return {"config": dict(self.config), "state_dict": sd}

    @property
    def embed_dim(self) -> int:
        return int(self.config["embed_dim"])

    @property
    def device(self) -> torch.device:
        return self.tower.token_embedding.weight.device

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = make_tokenizer(
                str(self.config["tokenizer"]), self.context_length, self.config.get("token_subset")
            )
        return self._tokenizer

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids (N, context_length), int64, on the encoder's device."""
        return self.tokenizer(list(texts)).to(self.device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unnormalised text features (N, E) from token ids (N, L): exactly `CLIP.encode_text`.

        Bit-identical to a CLIP whose weights are frozen too (as a Teacher's are): PyTorch's masked
        attention picks another kernel when weights require grad (about 1e-6 apart).
        """
        return self.tower(tokens)

    @torch.no_grad()
    def encode_texts(
        self, texts: Sequence[str], *, normalize: bool = True, batch_size: int = 256
    ) -> torch.Tensor:
        """Embed strings in batches (no gradients).

        Args:
            texts: the strings (full prompts, not class names).
            normalize: L2-normalise each embedding.
            batch_size: strings per forward.

        Returns:
            (N, E) float32 embeddings on the encoder's device.
        """
        outs = []
        for start in range(0, len(texts), batch_size):
            feats = self(self.tokenize(texts[start : start + batch_size])).float()
            outs.append(F.normalize(feats, dim=-1) if normalize else feats)
        if not outs:
            return torch.empty(0, self.embed_dim, device=self.device)
        return torch.cat(outs)


@torch.no_grad()
def encode_classes(
    encoder: TextEncoder,
    classes: Sequence[Sequence[str]],
    templates: Sequence[str] = IMAGENET_TEMPLATES,
    *,
    batch_size: int = 256,
) -> torch.Tensor:
    """Class embeddings by the zero-shot recipe.

    Every synonym x template string is embedded and L2-normalised; a class's vectors are averaged
    and the mean re-normalised.

    Args:
        encoder: the text tower.
        classes: one list of synonyms per class (`parse_class_names`).
        templates: prompt templates, each with one "{}".
        batch_size: prompts per forward.

    Returns:
        (C, E) float32 unit-norm embeddings, on the encoder's device.

    Raises:
        ZerosegError: no classes, a class without a name, or invalid templates.
    """
    templates = check_templates(templates)
    if not classes or any(len(c) == 0 for c in classes):
        raise ZerosegError("every class needs at least one name")
    check_known_words(encoder.tokenizer, [name for names in classes for name in names])
    prompts = [t.format(name) for names in classes for name in names for t in templates]
    feats = encoder.encode_texts(prompts, normalize=True, batch_size=batch_size)
    counts = torch.tensor([len(names) * len(templates) for names in classes], device=feats.device)
    owner = torch.repeat_interleave(torch.arange(len(classes), device=feats.device), counts)
    sums = torch.zeros(len(classes), feats.shape[1], device=feats.device).index_add_(0, owner, feats)
    return F.normalize(sums / counts[:, None], dim=-1)


class Vocabulary:
    """Class embeddings cached per (classes, templates), so a repeated vocabulary costs nothing.

    An LRU of vocabularies; calls return copies, so callers may modify them. `misses` counts the
    calls that had to encode.

    Args:
        encoder: the text tower (`encode_classes` runs on it).
        templates: the default prompt templates.
        max_entries: vocabularies kept (at least 1).

    Raises:
        ZerosegError: invalid templates.
    """

    def __init__(
        self, encoder: TextEncoder, templates: Sequence[str] = IMAGENET_TEMPLATES, max_entries: int = 16
    ):
        self.encoder = encoder
        self.templates = check_templates(templates)
        self.max_entries = max(1, int(max_entries))
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.misses = 0

    def __call__(self, classes, templates: Sequence[str] | None = None) -> torch.Tensor:
        """Embeddings of a class list, from the cache when it was seen before.

        Args:
            classes: parsed entries (a list of lists), or anything `parse_class_names` accepts.
            templates: prompt templates for this call (default: the vocabulary's).

        Returns:
            (C, E) float32 unit-norm embeddings (a copy), on the encoder's device.

        Raises:
            ZerosegError: invalid classes or templates.
        """
        if not (isinstance(classes, list) and all(isinstance(c, list) for c in classes)):
            classes = parse_class_names(classes)
        templates = self.templates if templates is None else check_templates(templates)
        key = (tuple(tuple(c) for c in classes), templates)
        if key in self._cache:
            self._cache.move_to_end(key)
        else:
            self.misses += 1
            self._cache[key] = encode_classes(self.encoder, classes, templates)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return self._cache[key].clone()

    def __len__(self) -> int:
        return len(self._cache)
