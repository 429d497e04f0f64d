"""The projector from the reducer's width into the LLM's embedding space."""

from torch import Tensor, nn


class Projector(nn.Module):
    """Two-layer MLP with GELU from the reducer's width to the LLM's (LLaVA-1.5's ``mlp2x_gelu``)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
