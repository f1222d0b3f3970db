"""The CLIP text side: rebuilt tower parity, prompt templates, class-name parsing, class embeddings."""

from __future__ import annotations

import io
import json
import warnings

import open_clip
import pytest
import torch
import torch.nn.functional as F
from tiny_clip import TINY_CFG, tiny_clip

from zeroseg.classes import IMAGENET_TEMPLATES, SINGLE_TEMPLATE, parse_class_names, read_class_file
from zeroseg.errors import ZerosegError
from zeroseg.teacher.text_state import text_state_from_clip
from zeroseg.text import TextEncoder, Vocabulary, encode_classes, make_tokenizer

VARIANT = {
    **TINY_CFG["text_cfg"],
    "ls_init_value": 0.1,
    "proj_bias": True,
    "pool_type": "last",
    "norm_kwargs": {"eps": 1e-6},
    "mlp_ratio": 2.0,
}


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder.from_state(text_state_from_clip(tiny_clip()))


def test_templates():
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}." and SINGLE_TEMPLATE == ("a photo of a {}.",)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"quick_gelu": True, "text_cfg": VARIANT}],
    ids=["default", "quickgelu-layerscale-bias-lastpool-eps"],
)
@pytest.mark.parametrize("infer", [True, False], ids=["inferred-cfg", "given-cfg"])
def test_rebuilt_text_encoder_is_bit_identical(overrides, infer):
    model = tiny_clip(**overrides).requires_grad_(False)
    cfg = None if infer else {**TINY_CFG, **overrides}
    state = text_state_from_clip(model, model_cfg=cfg)
    json.dumps(state["config"])  # JSON-able
    buf = io.BytesIO()
    torch.save(state, buf)  # the checkpoint contract: weights_only loadable
    buf.seek(0)
    enc = TextEncoder.from_state(torch.load(buf, weights_only=True))
    assert not any(k.startswith("visual") or k == "logit_scale" for k in state["state_dict"])
    tokens = enc.tokenize(["a photo of a cat.", "sofa", "a very long sentence that will not fit the context"])
    assert torch.equal(enc(tokens), model.encode_text(tokens))
    assert torch.equal(TextEncoder.from_state(enc.state())(tokens), enc(tokens))


def test_custom_text_clip_text_tower():
    torch.manual_seed(0)
    model = open_clip.model.CustomTextCLIP(**TINY_CFG).eval().requires_grad_(False)
    enc = TextEncoder.from_state(text_state_from_clip(model))
    tokens = enc.tokenize(["a dog"])
    assert torch.equal(enc(tokens), model.encode_text(tokens))


def test_encoder_rejects_wrong_states():
    state = text_state_from_clip(tiny_clip())
    with pytest.raises(ZerosegError, match="format"):
        TextEncoder({**state["config"], "format": "other"}, state["state_dict"])
    broken = dict(state["state_dict"])
    broken.pop("ln_final.weight")
    with pytest.raises(ZerosegError, match="do not fit"):
        TextEncoder(state["config"], broken)
    with pytest.raises(ZerosegError):
        TextEncoder.from_state({"config": state["config"]})
    with pytest.raises(ZerosegError, match="unknown tokenizer"):
        make_tokenizer("no-such-tokenizer", 16)


def _manual(encoder, prompts):
    return F.normalize(F.normalize(encoder(encoder.tokenize(prompts)), dim=-1).mean(0), dim=-1)


def test_template_averaging(encoder):
    templates = ("a photo of a {}.", "a drawing of the {}.", "{}")
    got = encode_classes(encoder, [["cat"], ["dog"]], templates)
    assert got.shape == (2, 64)
    torch.testing.assert_close(
        got[0], _manual(encoder, [t.format("cat") for t in templates]), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(2))


def test_synonyms_averaged(encoder):
    templates = ("a photo of a {}.", "the {}")
    got = encode_classes(encoder, [["sofa", "couch"], ["cat"]], templates)
    prompts = [t.format(n) for n in ("sofa", "couch") for t in templates]
    torch.testing.assert_close(got[0], _manual(encoder, prompts), atol=1e-6, rtol=0)
    alone = encode_classes(encoder, [["sofa"], ["cat"]], templates)
    assert not torch.allclose(got[0], alone[0]) and torch.allclose(got[1], alone[1], atol=1e-6)


def test_encode_classes_batches_consistently(encoder):
    classes = [[f"thing {i}"] for i in range(7)]
    a = encode_classes(encoder, classes, IMAGENET_TEMPLATES[:5], batch_size=3)
    b = encode_classes(encoder, classes, IMAGENET_TEMPLATES[:5], batch_size=1000)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    with pytest.raises(ZerosegError, match="exactly one"):
        encode_classes(encoder, classes, ("no placeholder",))
    with pytest.raises(ZerosegError):
        encode_classes(encoder, classes, ())


def test_parse_class_names():
    text = "# VOC-ish\nbackground\n\n  sofa ,  couch,sofa \n tv   monitor; cat\n"
    assert parse_class_names(text) == [["background"], ["sofa", "couch"], ["tv monitor"], ["cat"]]
    assert parse_class_names(["cat", "dog, puppy"]) == [["cat"], ["dog", "puppy"]]
    assert parse_class_names([["cat"], ["dog", "puppy"]]) == [["cat"], ["dog", "puppy"]]
    for bad in ("", "\n # only a comment\n", [], ["cat", "Cat"], "dog\ndog\ndog", ", ,"):
        with pytest.raises(ZerosegError):
            parse_class_names(bad)
    with pytest.raises(ZerosegError, match="listed twice .*entries 1 and 3"):
        parse_class_names("cat\ndog\ncat, kitty")


def test_read_class_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("\ufeff# comment\nbackground\naeroplane, airplane\n\nbicycle\n", encoding="utf-8")
    assert read_class_file(path) == [["background"], ["aeroplane", "airplane"], ["bicycle"]]
    with pytest.raises(ZerosegError, match="not found"):
        read_class_file(tmp_path / "missing.txt")
    dup = tmp_path / "dup.txt"
    dup.write_text("a\nb\na\n")
    with pytest.raises(ZerosegError, match="dup.txt"):
        read_class_file(dup)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ZerosegError, match="UTF-8"):
        read_class_file(tmp_path / "bin.txt")


def test_vocabulary_caches(encoder):
    vocab = Vocabulary(encoder, templates=SINGLE_TEMPLATE, max_entries=2)
    a = vocab("cat\ndog")
    b = vocab([["cat"], ["dog"]])
    assert vocab.misses == 1 and torch.equal(a, b)
    a.zero_()  # callers get copies
    assert not torch.equal(vocab("cat;dog"), a)
    vocab("bird")
    vocab(["fish"])
    assert len(vocab) == 2 and vocab.misses == 3
    torch.testing.assert_close(vocab("cat\ndog", templates=SINGLE_TEMPLATE), b)


# ---- words a pruned vocabulary does not know -------------------------------------------------------


@pytest.fixture(scope="module")
def shapeworld_encoder():
    """The bundled model's text tower: its tokenizer keeps only the ShapeWorld captions' tokens."""
    from zeroseg.bundled import bundled_checkpoint
    from zeroseg.checkpoint import load_checkpoint

    return load_checkpoint(bundled_checkpoint(), with_train_state=False).build_text_encoder()


def test_unknown_words_are_warned_about_in_one_line(shapeworld_encoder):
    """`cat, person, cup` all map to the one unknown token of the ShapeWorld tokenizer, so they got
    identical embeddings silently; now one warning names them (and known words raise none)."""
    from zeroseg.text import UnknownWordsWarning

    with pytest.warns(UnknownWordsWarning) as caught:
        emb = encode_classes(
            shapeworld_encoder, [["cat"], ["person"], ["cup"], ["red"]], ["a photo of a {}."]
        )
    assert torch.allclose(emb[0], emb[1]) and torch.allclose(emb[1], emb[2])  # why it matters
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "'cat', 'person', 'cup'" in messages[0] and "'red'" not in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownWordsWarning)
        encode_classes(shapeworld_encoder, [["red"], ["blue"]], ["a photo of a {}."])


def test_strict_vocabulary_refuses_unknown_words(shapeworld_encoder, encoder):
    """`--strict-vocab` (`vocabulary_policy(strict=True)`) turns the warning into a one-line error;
    a full CLIP BPE tokenizer knows every word, so nothing is refused there."""
    from zeroseg.text import vocabulary_policy

    with vocabulary_policy(strict=True):
        with pytest.raises(ZerosegError, match="'kitten'.*--strict-vocab"):
            encode_classes(shapeworld_encoder, [["red"], ["kitten", "red"]], ["a {}."])
        encode_classes(encoder, [["kitten"], ["traffic light"]], ["a {}."])
