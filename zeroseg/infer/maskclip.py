"""The training-free MaskCLIP baseline: dense labels straight from the teacher CLIP, `MaskCLIPSegmenter`.

Zhou et al., "Extract Free Dense Labels from CLIP" (ECCV 2022): run CLIP's ViT up to its last
residual block and, in that block, replace the attention output by the *value* embeddings, so every
patch keeps its own content instead of being mixed towards the global token. The projected patch
features are then named by cosine with the text embeddings, like CLIP names whole images.

Dense-feature modes (`mode`), each followed by the tower's own `ln_post` and `proj`:

* ``"v_only"`` — ln_1 -> value projection -> out_proj (the block's attention branch with the
  attention replaced by the identity; LayerScale kept if the tower has one). Classic MaskCLIP.
* ``"vv_res"`` — the last block as usual but with that value branch instead of attention:
  x + v(x), then + MLP(ln_2(.)).
* ``"tokens"`` — the ordinary patch tokens after the last block (what a mean-pooled tower averages
  into its image embedding).

Resolution strategies (`strategy`):

* ``"slide"`` — the image at `short_side`, cut into windows of the teacher's native input size with
  stride half a window (rounded to whole patches; the last window sits flush with the border). All
  windows go through the tower as one batch (chunks of `max_batch`); each window's class
  probabilities are averaged over the windows covering a patch, at patch resolution.
* ``"interp"`` — the whole image at `short_side`, positional embeddings interpolated bicubically.
* ``"down"`` — the image resized (squashed) to the teacher's native square input.

Defaults, and why:

* mode: ``"vv_res"`` for a mean-pooled tower (``pool_type="avg"``), else ``"v_only"``: a ShapeWorld
  prototype found vv_res best on its mean-pooled teacher and v_only best on a CLS-pooled one, whose
  last-block tokens were near useless (README, "MaskCLIP baseline"); v_only is also MaskCLIP's
  choice for OpenAI's CLS-pooled CLIP.
* strategy: ``"slide"``: native-size windows show the tower inputs at the scale it was trained on
  (the prototype's best with the mean-pooled teacher; the CLS-pooled one preferred "interp"). The
  SCLIP family of training-free baselines slides 224 windows with stride 112 as well.
* short side: twice the native input. For real CLIP (224) that is 448, the ZeroSeg / GroupViT test
  protocol, so the baseline and `Segmenter` see images at one scale (SCLIP's VOC setting is 336:
  pass short_side=336 for it); for the ShapeWorld teacher (64) it is 128, the scenes' own size,
  i.e. the prototype's 3x3 grid of 64-px windows.
* Text: `IMAGENET_TEMPLATES`, background below probability 0.5, no background prompt (on ShapeWorld,
  whose teacher learnt a "background" caption, the prototype's tuning picked bg_prompt=True).

The labels come from the kernels' dense head (`zeroseg.kernels.dense_head`; for "slide" its two
halves with the averaging in between), in the same label space as `zeroseg.Segmenter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from zeroseg.classes import IMAGENET_TEMPLATES
from zeroseg.errors import ZerosegError
from zeroseg.infer.labels import DEFAULT_BG_THRESH, LabelSpace, SegmentationResult, head_result
from zeroseg.infer.maskclip_tower import DenseTower, check_choice
from zeroseg.infer.torch_base import TorchSegmenterBase
from zeroseg.kernels import dense_head, token_text_similarity, upsample_labels
from zeroseg.teacher.clip import Teacher
from zeroseg.teacher.load import load_teacher
from zeroseg.text import Vocabulary

STRATEGIES: tuple[str, ...] = ("slide", "interp", "down")
DEFAULT_STRATEGY = "slide"
#: Views (windows or images) per forward pass through the tower.
DEFAULT_MAX_BATCH = 32


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Offsets of windows covering [0, length): every `stride`, the last flush with the end.

    A window longer than `length` shrinks to it (one window).
    """
    window = min(window, length)
    count = -(-(length - window) // stride) + 1
    return sorted({min(i * stride, length - window) for i in range(count)})


class DenseOutput(NamedTuple):
    """MaskCLIP's forward output: dense features (B, h, w, E) per window (top, left, height, width)
    in pixels of the network input (one window covering it all unless the strategy slides)."""

    windows: dict[tuple[int, int, int, int], torch.Tensor]
    input_size: tuple[int, int]


class MaskCLIPSegmenter(TorchSegmenterBase):
    """Training-free dense segmentation with a teacher CLIP; same call as `zeroseg.Segmenter`."""

    def __init__(
        self,
        teacher: Teacher,
        *,
        device: str | torch.device | None = None,
        short_side: int | None = None,
        mode: str | None = None,
        strategy: str = DEFAULT_STRATEGY,
        templates: Sequence[str] | None = None,
        bg_thresh: float = DEFAULT_BG_THRESH,
        bg_prompt: bool = False,
        backend: str | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        vocabulary: Vocabulary | None = None,
    ) -> None:
        """Wrap a teacher CLIP as a segmenter.

        Args:
            teacher: its image tower gives the dense features, its text tower names them.
            device: where to run (the teacher is moved there; None keeps the teacher's device).
            short_side: image short side for "slide" and "interp" (default: 2x the native input;
                "down" ignores it).
            mode: one of `zeroseg.infer.maskclip_tower.MODES` (see the module docstring); None picks
                it by the tower's pooling (`default_mode`).
            strategy: one of `STRATEGIES` (see the module docstring).
            templates: prompt templates (default: the 80 ImageNet ones).
            bg_thresh: default of the call's `bg_thresh`, in [0, 1].
            bg_prompt: default of the call's `bg_prompt`.
            backend: the kernels' backend (see `zeroseg.kernels.dispatch`).
            max_batch: views (windows or images) per tower forward.
            vocabulary: a text-embedding cache to share between segmenters on the same teacher
                (e.g. a sweep over modes and strategies); by default one is built from the
                teacher's text tower.

        Raises:
            ZerosegError: a tower MaskCLIP cannot run (not a plain open_clip ViT), an unknown mode
                or strategy, a short side below the patch size, bg_thresh outside [0, 1], a
                non-positive max_batch, or both templates and vocabulary.
        """
        visual = teacher.model.visual
        self.tower = DenseTower(visual, mode)
        self.mode = self.tower.mode
        self.strategy = check_choice(strategy, STRATEGIES, "strategy")
        self.teacher = teacher
        self.visual = visual
        self.patch = self.tower.patch
        self.native_grid = self.tower.native_grid
        self.num_prefix = self.tower.num_prefix
        self.window = (
            self.native_grid[0] * self.patch
        )  # native input side (Teacher guarantees a square tower)
        self.stride = max(self.patch, self.window // 2 // self.patch * self.patch)
        self.short_side = int(short_side) if short_side is not None else 2 * teacher.image_size
        if self.short_side < self.patch:
            raise ZerosegError(f"short side {self.short_side} is smaller than the patch size {self.patch}")
        if not 0.0 <= float(bg_thresh) <= 1.0:
            raise ZerosegError(f"background threshold must be in [0, 1], got {bg_thresh}")
        if int(max_batch) <= 0:
            raise ZerosegError(f"max_batch must be positive, got {max_batch}")
        self.default_bg_thresh = float(bg_thresh)
        self.default_bg_prompt = bool(bg_prompt)
        self.max_batch = int(max_batch)
        if vocabulary is not None and templates is not None:
            raise ZerosegError("pass templates or a vocabulary, not both (a vocabulary has its templates)")
        self.backend = backend
        self.logit_scale = teacher.logit_scale
        if device is not None:
            teacher.to(device)
        self.device = teacher.device
        if vocabulary is None:
            encoder = teacher.text_encoder().to(self.device)
            vocabulary = Vocabulary(encoder, IMAGENET_TEMPLATES if templates is None else templates)
        self.vocabulary = vocabulary
        self._mean = torch.tensor(teacher.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(teacher.std, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_spec(
        cls,
        spec: str,
        *,
        device: str | torch.device = "cpu",
        short_side: int | None = None,
        mode: str | None = None,
        strategy: str = DEFAULT_STRATEGY,
        templates: Sequence[str] | None = None,
        **kwargs,
    ) -> MaskCLIPSegmenter:
        """Load the teacher named by `spec` and wrap it.

        Args:
            spec: a teacher spec (see `zeroseg.teacher.load.load_teacher`).
            device: where to load and run the teacher.
            short_side: as for the constructor.
            mode: as for the constructor.
            strategy: as for the constructor.
            templates: as for the constructor.
            **kwargs: the constructor's other arguments (bg_thresh, bg_prompt, backend, ...).

        Returns:
            The `MaskCLIPSegmenter`.

        Raises:
            ZerosegError: the teacher cannot be loaded, or the constructor refuses it.
        """
        teacher = load_teacher(spec, device=device)
        return cls(
            teacher, short_side=short_side, mode=mode, strategy=strategy, templates=templates, **kwargs
        )

    # ---- dense features -------------------------------------------------------------------------

    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected patch features (N, h, w, E) float32 of normalised images (N, 3, H, W), H and W
        multiples of the patch size (`DenseTower`)."""
        return self.tower(pixels.to(self.device))

    # ---- geometry -------------------------------------------------------------------------------

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input size (H, W) of an image: native square for "down", else short side scaled."""
        if self.strategy == "down":
            return self.window, self.window
        return super().input_size(height, width)

    def windows(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """Sliding windows (top, left, h, w) in pixels over an input of height x width (multiples of
        the patch): native-size windows, stride half a window, the last flush with the border."""
        wh, ww = min(self.window, height), min(self.window, width)
        return [
            (top, left, wh, ww)
            for top in window_starts(height, self.window, self.stride)
            for left in window_starts(width, self.window, self.stride)
        ]

    # ---- the stages -----------------------------------------------------------------------------

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> DenseOutput:
        """Dense features of [0, 1] pixels: of each sliding window ("slide"), else of the whole input."""
        b, _, height, width = pixels.shape
        x = (pixels - self._mean) / self._std
        if self.strategy != "slide":
            step = self.max_batch
            feats = torch.cat([self.dense_features(x[i : i + step]) for i in range(0, b, step)])
            return DenseOutput({(0, 0, height, width): feats}, (height, width))
        boxes = self.windows(height, width)
        windows: dict[tuple[int, int, int, int], list[torch.Tensor | None]] = {
            box: [None] * b for box in boxes
        }
        crops = [(box, i) for box in boxes for i in range(b)]
        for start in range(0, len(crops), self.max_batch):
            chunk = crops[start : start + self.max_batch]
            feats = self.dense_features(
                torch.stack([x[i, :, y : y + h, c : c + w] for (y, c, h, w), i in chunk])
            )
            for k, (box, i) in enumerate(chunk):
                windows[box][i] = feats[k]
        return DenseOutput({box: torch.stack(f) for box, f in windows.items()}, (height, width))

    @torch.no_grad()
    def head(
        self,
        out: DenseOutput,
        text: torch.Tensor,
        sizes: Sequence[tuple[int, int]],
        *,
        bg_thresh: float,
        space: LabelSpace,
    ) -> list[SegmentationResult]:
        """Label each image at its (H, W). A result's `segment_labels` / `segment_probs` are per patch
        of the network input (row-major): the best class's label (before thresholding), its probability."""
        if self.strategy != "slide":
            (feats,) = out.windows.values()
            results = []
            for j, size in enumerate(sizes):
                head = dense_head(
                    feats[j : j + 1], text, self.logit_scale, size, bg_thresh,
                    bg_label=0, label_offset=space.label_offset, backend=self.backend,
                )  # fmt: skip
                results.append(head_result(head.labels, head.index, head.prob, space))
            return results
        probs = self.window_probs(out, text)
        return [self._label_probs(probs[j : j + 1], size, bg_thresh, space) for j, size in enumerate(sizes)]

    def window_probs(self, out: DenseOutput, text: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, C, h, w) at patch resolution, averaged over the windows covering
        each patch."""
        p = self.patch
        height, width = out.input_size
        first = next(iter(out.windows.values()))
        b, c = first.shape[0], text.shape[0]
        total = torch.zeros(b, c, height // p, width // p, device=self.device)
        count = torch.zeros(1, 1, height // p, width // p, device=self.device)
        for (y, x, h, w), feats in out.windows.items():
            count[..., y // p : (y + h) // p, x // p : (x + w) // p] += 1
            _, gh, gw, d = feats.shape
            probs = token_text_similarity(
                feats.reshape(b, gh * gw, d), text, self.logit_scale, return_probs=True, backend=self.backend
            ).probs
            total[:, :, y // p : y // p + gh, x // p : x // p + gw] += probs.transpose(1, 2).reshape(
                b, c, gh, gw
            )
        return total / count

    def _label_probs(self, probs, size, thresh, space: LabelSpace) -> SegmentationResult:
        c = probs.shape[1]
        table = (torch.arange(c, device=probs.device, dtype=torch.int32) + space.label_offset).expand(1, c)
        labels = upsample_labels(probs, table, None, size, thresh, bg_label=0, backend=self.backend)
        index = probs.argmax(dim=1)  # ties -> lowest class, like the head
        prob = probs.gather(1, index.unsqueeze(1)).squeeze(1)
        return head_result(labels, index, prob, space)
