"""No reduction: every patch token of every real frame, the upper bound the other strategies are compared with."""

from __future__ import annotations

from torch import Tensor

from lit_bvllm.reducers.base import Reducer, ReducerOutput, pack
from lit_bvllm.reducers.sampling import select_uniform_frames
from lit_bvllm.reducers.uniform import gather_frames


class Identity(Reducer):
    """All ``T·N`` tokens of the real frames, frame-major, raster order within a frame.

    Tensor contract (see ``base.py``): ``frames (B, T, N, D) -> tokens (B, M, D)``, ``M = real frames · N``.
    A sample over ``budget`` tokens raises, unless ``truncate``: then ``budget // num_patches`` whole frames,
    uniformly spaced over the video (``sampling.uniform_indices``), are kept and only those are encoded
    (``frames_to_encode``). Uniform spacing is chosen over cutting the tail because it keeps the whole time span
    in view, as every other budgeted strategy does. No parameters; gradients reach every kept token.

    ``info``: ``num_tokens (B,)``; with ``truncate`` also ``frame_indices (B, n)`` and ``frame_valid (B, n)``.

    Args:
        in_dim: width D of the vision tower's patch tokens.
        budget: maximum tokens per sample θ.
        truncate: keep uniformly spaced whole frames within the budget instead of raising on long videos.
        num_patches: patches per frame N of the vision tower; required with ``truncate`` (it sets the frame cap
            ``budget // num_patches`` before the tower runs), checked against the frames when given.
    """

    training_free = True
    inference_args = frozenset({"budget"})  # may change on a trained model (Reducer.inference_args)

    @classmethod
    def example(cls, in_dim: int, num_patches: int) -> Identity:
        return cls(in_dim, budget=4 * num_patches + 3, truncate=True, num_patches=num_patches)

    def __init__(self, in_dim: int, budget: int, truncate: bool = False, num_patches: int | None = None):
        super().__init__()
        if truncate and num_patches is None:
            raise ValueError(
                "Identity with truncate=true must know the patches per frame to pick frames before encoding; "
                "set --model.reducer.init_args.num_patches"
            )
        if truncate and num_patches > budget:
            raise ValueError(
                f"Identity: budget={budget} is smaller than one frame ({num_patches} patches); "
                "raise --model.reducer.init_args.budget"
            )
        self.in_dim = self.out_dim = in_dim
        self.budget = budget
        self.truncate = truncate
        self.num_patches = num_patches
        self.max_frames = budget // num_patches if truncate else None

    def forward(
        self,
        frames: Tensor,
        cls: Tensor,
        frame_mask: Tensor,
        text_ids: Tensor | None = None,
        text_mask: Tensor | None = None,
        cls_attn: Tensor | None = None,
    ) -> ReducerOutput:
        B, T, N, D = frames.shape
        if self.num_patches is not None and N != self.num_patches:
            raise ValueError(
                f"Identity was built for num_patches={self.num_patches} but the vision tower gives N={N} patches "
                f"per frame; set --model.reducer.init_args.num_patches={N}"
            )
        info = {}
        if self.truncate:
            idx, valid = select_uniform_frames(frame_mask, self.max_frames)  # (B, n)
            frames, frame_mask = gather_frames(frames, idx), valid  # (B, n, N, D), (B, n)
            info.update(frame_indices=idx, frame_valid=valid)
        else:
            counts = frame_mask.sum(1) * N  # (B,)
            over = (counts > self.budget).nonzero().flatten().tolist()
            if over:
                i = over[0]
                raise ValueError(
                    f"Identity: {len(over)} sample(s) of the batch exceed budget={self.budget} tokens (sample {i}: "
                    f"{int(frame_mask[i].sum())} frames × {N} patches = {int(counts[i])} tokens); set "
                    "--model.reducer.init_args.truncate=true (with --model.reducer.init_args.num_patches) to keep "
                    "uniformly spaced whole frames, raise --model.reducer.init_args.budget, or decode fewer frames "
                    "(--data.max_frames / --data.fps)"
                )
        B, n = frame_mask.shape
        tokens = frames.reshape(B, n * N, D)  # (B, n, N, D) -> (B, n*N, D)
        keep = frame_mask[:, :, None].expand(B, n, N).reshape(B, n * N)  # (B, n, N) -> (B, n*N)
        tokens, token_mask = pack(tokens, keep)
        info["num_tokens"] = token_mask.sum(1)
        return ReducerOutput(tokens, token_mask, info)
